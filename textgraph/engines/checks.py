"""Argument checks for engine settings: refuse, at construction, values that would silently
mean "no limit" or "stop at once" (0, negative, NaN, a string), saying what to pass instead."""

from __future__ import annotations

import re
from typing import Any

import httpx

from textgraph._checks import (  # noqa: F401 - the engine layer's names for them
    _is_int,
    _is_number,
    check_int,
    check_number,
    check_optional_int,
    check_optional_number,
)
from textgraph.errors import ArgumentError

EXAMPLE_URL = "http://localhost:8000/v1"


def split_base_url(base_url: Any, *, what: str = "base_url") -> tuple[str, tuple[str, str] | None]:
    """Check an http(s) base URL; return it without userinfo, and the (user, password) that
    was in it (sent as basic auth, never shown). Raises ArgumentError for anything else."""
    if not isinstance(base_url, str):
        raise ArgumentError(
            f"{what} must be a string such as {EXAMPLE_URL!r}, got {type(base_url).__name__}"
        )
    shown = _hide_userinfo(base_url)
    try:
        url = httpx.URL(base_url.strip())
    except (httpx.InvalidURL, ValueError, TypeError):
        url = None
    if url is None or url.scheme not in ("http", "https") or not url.host:
        raise ArgumentError(
            f"{what} {shown!r} is not an http(s) URL; pass the server's address with its "
            f"scheme, e.g. {EXAMPLE_URL!r} (OpenAI-compatible), 'http://localhost:11434' "
            "(Ollama) or 'https://api.anthropic.com'"
        )
    auth = None
    if url.userinfo:
        auth = (url.username, url.password)
        url = url.copy_with(username=None, password=None)
    return str(url), auth


_USERINFO = re.compile(r"(?<=://)[^/@\s]*@")


def _hide_userinfo(text: str) -> str:
    return _USERINFO.sub("***@", text)
