"""Unicode and whitespace normalisation of every turn."""

from __future__ import annotations

import unicodedata
from typing import Literal

from dataflywheel.ops.base import Mapper, OpConfig
from dataflywheel.ops.registry import register
from dataflywheel.text import normalize_whitespace


class NormalizeConfig(OpConfig):
    unicode_form: Literal["NFKC", "NFC", "none"] = "NFKC"
    whitespace: bool = True
    """Collapse runs of spaces inside lines, trim line ends, keep at most one blank line (indentation is kept)."""


@register
class Normalize(Mapper):
    """Normalise text fields: Unicode NFKC and whitespace."""

    name = "enhance.normalize"
    Config = NormalizeConfig

    def writes_scores(self) -> tuple[str, ...]:
        return ()

    def _clean(self, text: str) -> str:
        if self.config.unicode_form != "none":
            text = unicodedata.normalize(self.config.unicode_form, text)
        return normalize_whitespace(text) if self.config.whitespace else text

    def map(self, record: dict) -> dict:
        out = dict(record)
        # a tool's result is machine output (JSON, code): left as the tool returned it
        out["messages"] = [m if m["role"] == "tool" else {**m, "content": self._clean(m["content"])}
                           for m in record["messages"]]
        for key in ("chosen", "rejected"):
            if record.get(key) is not None:
                out[key] = {**record[key], "content": self._clean(record[key]["content"])}
        return out
