"""Provider engines: each speaks one wire format."""
