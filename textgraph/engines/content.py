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
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from textgraph._media import SUPPORTED_MEDIA_TYPES, describe_image, sha256_of, sniff_media_type


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
