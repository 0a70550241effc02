"""`tg.Image`: an image as an input of a textual computation graph.

An Image is a Variable whose text is a one-line description of the image
('<image sha256:ab12cd34ef56… 12.3 KB image/png>'): reports, traces, critics' prompts and
checkpoints read that text, never the bytes. Ops that call a model (LLMCall,
FormattedLLMCall) send the bytes themselves, as an image part of the user message. An image
is evidence, not a parameter: it never requires a gradient and no optimizer may rewrite it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from textgraph import _media
from textgraph._media import SUPPORTED_MEDIA_TYPES, describe_image, human_size, sha256_of
from textgraph.errors import ArgumentError, ImageError
from textgraph.variable import Variable

# The largest image accepted, in bytes (20 MiB). Change it for the process by assigning
# textgraph.image.MAX_IMAGE_BYTES, or for one image with tg.Image(..., max_bytes=N).
MAX_IMAGE_BYTES = _media.DEFAULT_MAX_IMAGE_BYTES

_MEDIA_ALIASES = {"image/jpg": "image/jpeg"}
_READ_ONLY = frozenset({"data", "source", "sha256", "size", "media_type"})


class Image(Variable):
    """An image input: `tg.Image("chart.png", role_description="the sales chart")`.

    path_or_bytes: a path (str or os.PathLike) to a PNG, JPEG, GIF or WEBP file, or the
        image's bytes. media_type: 'image/png', 'image/jpeg', 'image/gif' or 'image/webp';
        when None it is read from the file's first bytes. max_bytes: the size limit (None:
        MAX_IMAGE_BYTES, 20 MiB). requires_grad: only False (TextGrad code passes it); an
        image is never optimized.

    `.data` is the bytes, `.sha256` their hash (what caches key on), `.size` their length,
    `.media_type` the type; `.value` and `str()` are the description.
    """

    def __init__(
        self,
        path_or_bytes: str | os.PathLike[str] | bytes,
        *,
        role_description: str,
        media_type: str | None = None,
        name: str | None = None,
        max_bytes: int | None = None,
        requires_grad: bool = False,
    ) -> None:
        if requires_grad is not False:  # False is accepted: TextGrad code passes it
            self.role_description = role_description
            self.requires_grad = requires_grad  # raises, saying what to optimize instead
        limit = MAX_IMAGE_BYTES if max_bytes is None else max_bytes
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ArgumentError(f"max_bytes must be an int >= 1 (bytes), got {max_bytes!r}")
        data, source = _read(path_or_bytes, limit)
        self._data, self._source, self._sha256 = data, source, sha256_of(data)
        self._media_type = _media_type(data, media_type, source)
        super().__init__(
            describe_image(self.sha256, self.size, self.media_type),
            role_description=role_description,
            name=name,
        )

    # --- content-hashed, so read-only: new bytes are a new tg.Image --------------------------

    @property
    def data(self) -> bytes:
        return self._data

    @property
    def source(self) -> str:
        return self._source

    @property
    def sha256(self) -> str:
        return self._sha256

    @property
    def size(self) -> int:
        return len(self._data)

    @property
    def media_type(self) -> str:
        return self._media_type

    def __setattr__(self, name: str, value: object) -> None:
        if name in _READ_ONLY:
            raise ArgumentError(
                f"a tg.Image's {name} cannot be changed: the image is identified by its bytes "
                "(caches key on their sha256); make a new tg.Image for other bytes"
            )
        super().__setattr__(name, value)

    # --- never a parameter ----------------------------------------------------------------

    @property
    def requires_grad(self) -> bool:
        return False

    @requires_grad.setter
    def requires_grad(self, flag: bool) -> None:
        if flag is not False:
            raise ArgumentError(
                f"a tg.Image ({self.role_description!r}) cannot require a gradient or be "
                "optimized: an optimizer rewrites text, and an image is fixed evidence. "
                "Optimize the prompt that reads it instead (the LLMCall's system_prompt or "
                "the FormattedLLMCall's template fields)"
            )

    @property
    def value(self) -> str:
        return self._value

    @value.setter
    def value(self, new: str) -> None:
        if getattr(self, "_value", None) is None:  # set once, by Variable.__init__
            self._value = new
            return
        raise ArgumentError(
            f"a tg.Image's value is the description of its bytes ({self._value}) and cannot "
            "be set; make a new tg.Image for another image"
        )

    def check_value(self, value: object) -> str:
        raise ArgumentError(
            f"a tg.Image ({self.role_description!r}) has no text value to replace: it cannot "
            "take part in a candidate or state dict; make a new tg.Image for another image"
        )

    def describe(self) -> str:
        """The longer description critics see: type, size and the whole sha256."""
        return f"{self.media_type} image, {human_size(self.size)}, sha256 {self.sha256}"

    def __repr__(self) -> str:
        return f"Image({self.value!r}, role={self.role_description!r}, id={self.id!r})"

    def _repr_html_(self) -> str:
        from html import escape

        role, value = escape(self.role_description), escape(self.value)
        return f"<div><b>{role}</b> <code>{value}</code></div>"


def _read(path_or_bytes: object, limit: int) -> tuple[bytes, str]:
    """The bytes and where they came from ('bytes' or the path), or an ImageError."""
    if isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
        data = bytes(path_or_bytes)
        source = "<bytes>"
    elif isinstance(path_or_bytes, (str, os.PathLike)):
        _refuse_encoded_text(path_or_bytes)
        path = Path(path_or_bytes)
        source = _shorten(str(path))
        try:
            if not path.exists():
                raise ImageError(f"image file {source!r} does not exist; check the path")
            if not path.is_file():
                raise ImageError(f"image path {source!r} is not a file")
            size = path.stat().st_size
            if size > limit:
                raise ImageError(_too_large(source, size, limit))
            data = path.read_bytes()
        except OSError as exc:  # unreadable, a name too long for the file system...
            raise ImageError(f"image file {source!r} cannot be read ({exc.strerror})") from None
    else:
        raise ImageError(
            "tg.Image takes a path (str or pathlib.Path) or the image's bytes, got "
            f"{type(path_or_bytes).__name__}"
        )
    if not data:
        raise ImageError(f"image {source!r} is empty (0 bytes); give a PNG, JPEG, GIF or WEBP")
    if len(data) > limit:
        raise ImageError(_too_large(source, len(data), limit))
    return data, source


# A str this long, all base64 characters, is an image's encoded bytes, not a path.
_BASE64_TEXT = re.compile(r"[A-Za-z0-9+/=\r\n]{200,}")


def _refuse_encoded_text(value: str | os.PathLike[str]) -> None:
    """A data URI or base64 text given as a path: say how to pass the bytes (and never echo
    them in the message)."""
    if not isinstance(value, str):
        return
    if value[:5].lower() == "data:" and ";base64," in value[:100]:
        kind = "a data URI"
        decode = "base64.b64decode(uri.split(',', 1)[1])"
    elif _BASE64_TEXT.fullmatch(value):
        kind = "base64 text"
        decode = "base64.b64decode(text)"
    else:
        return
    raise ImageError(
        f"tg.Image got {kind} ({len(value)} characters) where it takes a path or the image's "
        f"bytes; decode it first: tg.Image({decode}, role_description=...)"
    )


def _shorten(source: str, limit: int = 120) -> str:
    """A path for a message: long ones cut in the middle."""
    if len(source) <= limit:
        return source
    return f"{source[: limit // 2]}\u2026{source[-limit // 2 :]}"


def _too_large(source: str, size: int, limit: int) -> str:
    return (
        f"image {source!r} is {human_size(size)} ({size} bytes), over the limit of "
        f"{human_size(limit)} ({limit} bytes); shrink it (providers refuse large images: "
        "Anthropic over 5 MB of base64, about 3.75 MB of file; see docs/images.md), or "
        "raise the limit with "
        "tg.Image(..., max_bytes=N) or textgraph.image.MAX_IMAGE_BYTES = N"
    )


def _media_type(data: bytes, given: str | None, source: str) -> str:
    sniffed = _media.sniff_media_type(data)
    if given is None:
        if sniffed is None:
            raise ImageError(
                f"image {source!r} is not a PNG, JPEG, GIF or WEBP (its first bytes are "
                f"{data[:8]!r}); convert it to one of those, or pass media_type=... if it is "
                "one of them"
            )
        return sniffed
    if not isinstance(given, str):
        raise ImageError(f"media_type must be a str such as 'image/png', got {given!r}")
    media_type = _MEDIA_ALIASES.get(given.strip().lower(), given.strip().lower())
    if media_type not in SUPPORTED_MEDIA_TYPES:
        raise ImageError(
            f"media_type {given!r} is not supported; providers accept "
            f"{', '.join(SUPPORTED_MEDIA_TYPES)}"
        )
    if sniffed is not None and sniffed != media_type:
        raise ImageError(
            f"image {source!r} was given media_type {given!r} but its bytes are {sniffed}; "
            "leave media_type=None to use what the bytes say"
        )
    return media_type
