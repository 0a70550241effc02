"""Content parts of a message: text and images, in the order the model reads them.

A message made of parts still has `content: str`, the parts' text with each image written
as its one-line description (`<image sha256:… 12.3 KB image/png>`): everything that reads
text (rules, token estimates, traces, critics' prompts) reads that. The image bytes live
only in `ImagePart.data`, which is left out of every dump (`model_dump`, JSON), so they reach
no cache row, cassette, trace or report; providers read `data` to build their wire format.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from textgraph._media import (
    SUPPORTED_MEDIA_TYPES,
    describe_image,
    human_size,
    sha256_of,
    sniff_media_type,
)
from textgraph.errors import ImageError


class TextPart(BaseModel):
    model_config = ConfigDict(frozen=True)

    type: Literal["text"] = "text"
    text: str


class ImagePart(BaseModel):
    """One image: its bytes (never dumped), media type, sha256 and size (always dumped)."""

    model_config = ConfigDict(frozen=True)

    type: Literal["image"] = "image"
    media_type: str
    sha256: str = ""
    size: int = 0
    data: bytes = Field(default=b"", exclude=True, repr=False)

    @model_validator(mode="before")
    @classmethod
    def _fill(cls, values: Any) -> Any:
        if isinstance(values, dict) and isinstance(values.get("data"), (bytes, bytearray)):
            data = bytes(values["data"])
            values = {**values, "data": data}
            values.setdefault("sha256", sha256_of(data))
            values.setdefault("size", len(data))
            if values.get("media_type") is None:
                values["media_type"] = sniff_media_type(data)
        return values

    @model_validator(mode="after")
    def _check(self) -> ImagePart:
        if not self.data:
            raise ValueError("an image part needs its bytes (data=...), and they are empty")
        if self.media_type not in SUPPORTED_MEDIA_TYPES:
            raise ValueError(
                f"image media type {self.media_type!r} is not one providers accept; use one "
                f"of {list(SUPPORTED_MEDIA_TYPES)}"
            )
        sniffed = sniff_media_type(self.data)
        if sniffed is not None and sniffed != self.media_type:
            raise ValueError(
                f"an image part's bytes are {sniffed} but its media_type is "
                f"{self.media_type!r} (providers refuse the mismatch); leave media_type=None "
                "to use what the bytes say"
            )
        if self.sha256 != sha256_of(self.data) or self.size != len(self.data):
            raise ValueError("an image part's sha256 and size must be those of its bytes")
        return self

    @property
    def description(self) -> str:
        return describe_image(self.sha256, self.size, self.media_type)

    def base64(self) -> str:
        """The bytes as standard base64 (what every wire format carries)."""
        return base64.b64encode(self.data).decode("ascii")

    def data_uri(self) -> str:
        return f"data:{self.media_type};base64,{self.base64()}"


class ToolUsePart(BaseModel):
    """A tool call the model made, as received (Anthropic answers a json_schema request with a
    forced tool call): kept so a follow-up turn can send it back and answer it by `id`. Its
    text is the input as JSON, what the reply's text already was."""

    model_config = ConfigDict(frozen=True)

    type: Literal["tool_use"] = "tool_use"
    id: str = Field(min_length=1)
    name: str = Field(min_length=1)
    input: dict[str, Any]

    @property
    def text(self) -> str:
        return json.dumps(self.input)


class ToolResultPart(BaseModel):
    """The answer to a tool call, by the call's id (`is_error`: the input was not usable, and
    `content` says why). Its text is `content`."""

    model_config = ConfigDict(frozen=True)

    type: Literal["tool_result"] = "tool_result"
    tool_use_id: str = Field(min_length=1)
    content: str
    is_error: bool = False

    @property
    def text(self) -> str:
        return self.content


AnyPart = TextPart | ImagePart | ToolUsePart | ToolResultPart
ContentPart = Annotated[AnyPart, Field(discriminator="type")]


def parts_text(parts: tuple[AnyPart, ...]) -> str:
    """The text of a message made of parts: text as is, each image as its description, a tool
    call as its input's JSON, a tool result as its content."""
    return "".join(p.description if isinstance(p, ImagePart) else p.text for p in parts)


def base64_size(size: int) -> int:
    """How many bytes `size` bytes take as standard base64 (what every wire format sends)."""
    return 4 * -(-size // 3)


@dataclass(frozen=True)
class ImageLimits:
    """What a provider documents it refuses, checked before anything is sent (an ImageError
    naming the limit), so a request is never sent only to fail, nor an image dropped. None:
    no such limit. Sizes are of the base64 text, as the providers measure them."""

    provider: str
    source: str  # the page that documents the limits
    max_image_base64_bytes: int | None = None
    max_images: int | None = None
    max_images_base64_bytes: int | None = None  # all of a request's images together

    def check(self, images: tuple[ImagePart, ...]) -> None:
        if not images:
            return
        change = (
            f"(limits from {self.source}; if the provider has raised them, set the provider "
            "engine's image_limits, e.g. tg.get_engine(...).image_limits, to a "
            "textgraph.engines.content.ImageLimits, or None to check nothing)"
        )
        if self.max_images is not None and len(images) > self.max_images:
            raise ImageError(
                f"{self.provider}: the request carries {len(images)} images, over the "
                f"{self.max_images} per request that {self.provider} accepts; nothing was "
                f"sent. Split the images over several calls {change}"
            )
        sizes = [base64_size(image.size) for image in images]
        for number, (image, size) in enumerate(zip(images, sizes, strict=True), 1):
            limit = self.max_image_base64_bytes
            if limit is not None and size > limit:
                raise ImageError(
                    f"{self.provider}: image {number} of the request ({image.description}) is "
                    f"{human_size(size)} as base64, over {self.provider}'s per-image limit of "
                    f"{human_size(limit)} ({limit} bytes, base64); nothing was sent. Resize or "
                    "recompress it (a raw file under 3/4 of the limit fits) "
                    f"{change}"
                )
        total = self.max_images_base64_bytes
        if total is not None and sum(sizes) > total:
            raise ImageError(
                f"{self.provider}: the request's {len(images)} images are {human_size(sum(sizes))} "
                f"as base64, over the {human_size(total)} a {self.provider} request may carry; "
                f"nothing was sent. Send fewer or smaller images per call {change}"
            )
