"""Exact dedup on normalised text."""

from __future__ import annotations

import hashlib

from dataflywheel.ops.base import OpConfig, Selection, Selector
from dataflywheel.ops.registry import register
from dataflywheel.records import TextField, text_of
from dataflywheel.text import dedup_key


class ExactDedupConfig(OpConfig):
    field: TextField = "conversation"
    """Which text is compared: the instruction, the response, or the whole conversation."""


@register
class ExactDedup(Selector):
    """Drop records whose normalised text (NFKC, case, punctuation, whitespace) was seen before; keep the first."""

    name = "select.exact_dedup"
    Config = ExactDedupConfig

    def select(self, scan) -> Selection:
        first_seen: dict[bytes, tuple[int, str]] = {}
        selection = Selection()
        position = 0
        for batch in scan():
            for record in batch:
                key = hashlib.blake2b(dedup_key(text_of(record, self.config.field)).encode(), digest_size=16).digest()
                if key in first_seen:
                    kept_position, kept_id = first_seen[key]
                    selection.rejected[position] = f"exact duplicate of {kept_id} ({self.config.field})"
                    selection.meta[position] = {"duplicate_of": kept_id}
                else:
                    first_seen[key] = (position, record["id"])
                position += 1
        return selection
