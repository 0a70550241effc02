"""Spans the compressor never drops, and sentence boundaries.

Protected by default (`DEFAULT_PATTERNS`):

- template placeholders: `{field}`, `{0}`, `{x.y!r:>10}`, `{{field}}` (braces around at most
  80 characters of one line);
- numbers: digits with their separators, sign and percent (`-3.5`, `1,024`, `12:30`, `50%`);
  a unit that contains a digit anywhere is kept;
- markers: XML-like tags (`<answer>`, `</NEW_VALUE_AB12CD34>`, `<br/>`,
  `<tag attr="v">`);
- fenced code blocks (``` or ~~~ fences; an unclosed fence runs to the end of the text).

Users add their own regexes (`protect=`). A unit (token) is protected when it overlaps a
protected span, so every protected span survives verbatim: the units covering it are kept
and units are contiguous.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import numpy as np

from textgraph.errors import ArgumentError

Span = tuple[int, int]

PLACEHOLDER = re.compile(r"\{\{?[^{}\n]{0,80}\}\}?")
NUMBER = re.compile(r"[-+]?\d+(?:[.,:/]\d+)*%?")
TAG = re.compile(r"</?[A-Za-z_][\w.:-]*(?:\s[^<>\n]{0,200})?/?>")
CODE_BLOCK = re.compile(r"(?ms)^[ \t]*(`{3,}|~{3,})[^\n]*\n.*?(?:^[ \t]*\1[ \t]*$|\Z)")

DEFAULT_PATTERNS: tuple[re.Pattern[str], ...] = (CODE_BLOCK, PLACEHOLDER, TAG, NUMBER)


def compile_patterns(protect: object, *, defaults: bool = True) -> tuple[re.Pattern[str], ...]:
    """The default patterns (unless defaults=False) and the user's: a str or compiled pattern,
    or an iterable of them."""
    if isinstance(protect, (str, re.Pattern)):
        protect = (protect,)
    if not isinstance(protect, Iterable):
        raise ArgumentError(
            f"protect must be regexes (str or re.Pattern) or a list of them, got {protect!r}"
        )
    out = list(DEFAULT_PATTERNS) if defaults else []
    for i, item in enumerate(protect):
        if isinstance(item, re.Pattern):
            pattern = item
        elif isinstance(item, str):
            try:
                pattern = re.compile(item)
            except re.error as exc:
                raise ArgumentError(
                    f"protect[{i}] is not a valid regex ({exc}): {item!r}"
                ) from None
        else:
            raise ArgumentError(
                f"protect[{i}] must be a regex (str or re.Pattern), got {type(item).__name__}"
            )
        if not isinstance(pattern.pattern, str):
            raise ArgumentError(f"protect[{i}] must be a str pattern, not bytes")
        out.append(pattern)
    return tuple(out)


def protected_spans(text: str, patterns: Sequence[re.Pattern[str]]) -> list[Span]:
    """Every non-empty match of every pattern, merged where they overlap."""
    found = sorted(m.span() for p in patterns for m in p.finditer(text) if m.end() > m.start())
    merged: list[Span] = []
    for a, b in found:
        if merged and a <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(b, merged[-1][1]))
        else:
            merged.append((a, b))
    return merged


def protected_units(units: Sequence[Span], spans: Sequence[Span]) -> np.ndarray:
    """True for each unit that overlaps a protected span."""
    mask = np.zeros(len(units), dtype=bool)
    if not spans or not units:
        return mask
    starts = np.fromiter((a for a, _ in units), dtype=np.int64, count=len(units))
    ends = np.fromiter((b for _, b in units), dtype=np.int64, count=len(units))
    for a, b in spans:
        # units with start < b and end > a
        lo = int(np.searchsorted(ends, a, side="right"))
        hi = int(np.searchsorted(starts, b, side="left"))
        mask[lo:hi] = True
    return mask


# --- sentences --------------------------------------------------------------------------------

# A sentence ends after . ! ? … (and closing quotes or brackets) before whitespace; a line
# break also starts a new sentence (lists, headings, paragraphs): the run of line breaks opens
# the next sentence, so no sentence is whitespace alone.
_SENTENCE_END = re.compile(r"[.!?…]+[\"'”’)\]]*(?=\s)|(?<!\n)(?=\n)")


def sentence_bounds(text: str) -> list[int]:
    """Start offsets of the sentences of `text` (the first is 0). Whitespace after a sentence
    belongs to the next one, as a token's leading space belongs to its word."""
    starts = {0}
    for m in _SENTENCE_END.finditer(text):
        if 0 < m.end() < len(text):
            starts.add(m.end())
    return sorted(starts)


def unit_sentences(text: str, units: Sequence[Span]) -> list[tuple[int, int]]:
    """Sentences as ranges of unit indices [i, j): a unit belongs to the sentence where it
    starts. Ranges are contiguous, non-empty and cover all units."""
    if not units:
        return []
    bounds = sentence_bounds(text)
    starts = np.fromiter((a for a, _ in units), dtype=np.int64, count=len(units))
    sentence_of = np.searchsorted(np.asarray(bounds), starts, side="right") - 1
    groups: list[tuple[int, int]] = []
    first = 0
    for i in range(1, len(units)):
        if sentence_of[i] != sentence_of[i - 1]:
            groups.append((first, i))
            first = i
    groups.append((first, len(units)))
    return groups
