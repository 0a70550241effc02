"""Image bytes as the framework sees them: the media type from the first bytes, the sha256,
and the one-line description that stands in for the bytes wherever text is read (prompts for
critics, traces, reports, cache keys). Shared by `tg.Image` and the engine's image parts."""

from __future__ import annotations

import hashlib

# The formats every provider textgraph speaks accepts (OpenAI, Anthropic, Ollama's vision
# models): JPEG, PNG, GIF and WEBP.
SUPPORTED_MEDIA_TYPES: tuple[str, ...] = ("image/png", "image/jpeg", "image/gif", "image/webp")

# A ceiling against mistakes (a video, a raw scan), not a provider's limit: those are checked
# per provider before upload (ImageLimits in engines/content.py). 20 MiB is the default
# here (change it per image with tg.Image(..., max_bytes=N) or for the process with
# textgraph.image.MAX_IMAGE_BYTES = N).
DEFAULT_MAX_IMAGE_BYTES = 20 * 1024 * 1024


def sniff_media_type(data: bytes) -> str | None:
    """The image type named by the file's magic bytes, or None when it is none of the four."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if len(data) >= 12 and data.startswith(b"RIFF") and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def human_size(size: int) -> str:
    """1234 -> '1.2 KB' (powers of 1024, one decimal), small sizes in bytes."""
    if size < 1024:
        return f"{size} B"
    value = float(size)
    for unit in ("KB", "MB", "GB"):
        value /= 1024
        if value < 1024 or unit == "GB":
            return f"{value:.1f} {unit}"
    raise AssertionError("unreachable")


SHORT_HASH = 12  # hex digits of the sha256 shown in the one-line description


def describe_image(sha256: str, size: int, media_type: str) -> str:
    """The text that stands for an image: '<image sha256:ab12cd34ef56… 12.3 KB image/png>'."""
    return f"<image sha256:{sha256[:SHORT_HASH]}\u2026 {human_size(size)} {media_type}>"
