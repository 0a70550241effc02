"""Keep secrets out of messages, logs, traces and reprs.

Providers echo keys back in error bodies, whole ("Incorrect API key provided: sk-...") or in
part ("key ending in ...CRET-XYZ", "sk-...XYZ1", "sk-proj-****XYZ1"). `redact` removes the
engine's own secrets, any run of six or more of their characters in a row, a trailing part of
one standing as a word, and anything shaped like a key or an elided key.
"""

from __future__ import annotations

import re

# Shorter "secrets" (a user name "me" in a URL) are not redacted: they would eat ordinary words.
MIN_SECRET_LENGTH = 4
_MIN_RUN = 6  # this many characters of a secret in a row are redacted wherever they appear
_GRAM = 4

_KEY_LIKE = re.compile(r"\b(sk-(?:ant-|proj-)?)[A-Za-z0-9_\-*.\u2026]{3,}")
# "...XYZ1", "…XYZ1", "****XYZ1": the visible end of an elided key.
_ELIDED = re.compile(r"(?:\.{3}|\u2026|\*{3,})[A-Za-z0-9_\-]{2,}")
_WORD = re.compile(r"[A-Za-z0-9_\-]")


# Image bytes a provider echoes back in an error ("Invalid image: data:image/png;base64,...").
_DATA_URI = re.compile(r"data:[\w.+-]+/[\w.+-]+;base64,[A-Za-z0-9+/=]*")
_LONG_BASE64 = re.compile(r"[A-Za-z0-9+/]{100,}={0,2}")


def elide_base64(text: str) -> str:
    """Data URIs and runs of 100+ base64 characters (image bytes, never useful in a
    message) become a short placeholder."""
    text = _DATA_URI.sub("<data URI elided>", text)
    return _LONG_BASE64.sub("<base64 elided>", text)


def redact(text: str, *secrets: str | None) -> str:
    """Replace each secret (and parts of it), and anything shaped like an API key, with ***;
    echoed image bytes (data URIs, long base64) are elided too."""
    text = elide_base64(text)
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):
        if len(secret) < MIN_SECRET_LENGTH:
            continue
        text = text.replace(secret, "***")
        if len(secret) >= _MIN_RUN:
            text = _redact_fragments(text, secret)
    text = _KEY_LIKE.sub(lambda m: f"{m.group(1)}***", text)
    return _ELIDED.sub("***", text)


def _redact_fragments(text: str, secret: str) -> str:
    """Runs of text made of the secret's 4-grams: redacted when at least _MIN_RUN long, or
    when a whole word that ends the secret (providers show a key's last characters)."""
    grams = {secret[i : i + _GRAM] for i in range(len(secret) - _GRAM + 1)}
    spans: list[tuple[int, int]] = []
    i = 0
    while i <= len(text) - _GRAM:
        if text[i : i + _GRAM] not in grams:
            i += 1
            continue
        j = i
        while j + _GRAM <= len(text) and text[j : j + _GRAM] in grams:
            j += 1
        end = j + _GRAM - 1
        run = text[i:end]
        whole_word = (i == 0 or not _WORD.match(text[i - 1])) and (
            end == len(text) or not _WORD.match(text[end])
        )
        if len(run) >= _MIN_RUN or (whole_word and secret.endswith(run)):
            spans.append((i, end))
        i = end
    for start, end in reversed(spans):
        text = text[:start] + "***" + text[end:]
    return text
