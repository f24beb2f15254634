"""Turn a model's token pieces into text for the reader: UTF-8 decoded incrementally (a character split
over tokens waits for its last byte) and stop strings held back until they are ruled out (pure).
"""

from __future__ import annotations

import codecs
from collections.abc import Sequence


class TextReleaser:
    """Decodes pieces as UTF-8 incrementally and holds back text that may be the start of a stop string."""

    def __init__(self, stops: Sequence[str]) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._stops = [s for s in stops if s]
        self._held = ""

    def feed(self, piece: bytes) -> tuple[str, bool]:
        text = self._held + self._decoder.decode(piece)
        hits = [i for i in (text.find(s) for s in self._stops) if i >= 0]
        if hits:
            self._held = ""
            return text[: min(hits)], True
        keep = max((_overlap(text, s) for s in self._stops), default=0)
        self._held = text[len(text) - keep :] if keep else ""
        return text[: len(text) - keep], False

    def flush(self) -> str:
        out, self._held = self._held + self._decoder.decode(b"", final=True), ""
        return out


def _overlap(text: str, stop: str) -> int:
    """Length of the longest suffix of `text` that is a proper prefix of `stop`."""
    for n in range(min(len(text), len(stop) - 1), 0, -1):
        if stop.startswith(text[-n:]):
            return n
    return 0
