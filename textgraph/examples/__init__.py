"""Runnable example programs; each is also a file under examples/ in the repository."""
