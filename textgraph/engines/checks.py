"""Argument checks for engine settings: refuse, at construction, values that would silently
mean "no limit" or "stop at once" (0, negative, NaN, a string), saying what to pass instead."""

from __future__ import annotations

import math
import re
from typing import Any

import httpx

from textgraph.errors import ArgumentError


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_int(name: str, value: Any, *, minimum: int, instead: str) -> None:
    """`value` must be an int >= minimum; `instead` says what to pass otherwise."""
    if not _is_int(value) or value < minimum:
        raise ArgumentError(f"{name} must be an int >= {minimum}, got {value!r}; {instead}")


def check_number(
    name: str, value: Any, *, positive: bool, instead: str, allow_inf: bool = False
) -> None:
    """`value` must be a finite number > 0 (positive) or >= 0; `instead` says what else."""
    ok = _is_number(value) and not math.isnan(value) and (allow_inf or not math.isinf(value))
    if ok:
        ok = value > 0 if positive else value >= 0
    if not ok:
        bound = "> 0" if positive else ">= 0"
        raise ArgumentError(f"{name} must be a finite number {bound}, got {value!r}; {instead}")


def check_optional_int(name: str, value: Any, *, minimum: int, none_means: str) -> None:
    if value is not None:
        check_int(name, value, minimum=minimum, instead=f"pass None for {none_means}")


def check_optional_number(name: str, value: Any, *, positive: bool, none_means: str) -> None:
    if value is not None:
        check_number(name, value, positive=positive, instead=f"pass None for {none_means}")


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
