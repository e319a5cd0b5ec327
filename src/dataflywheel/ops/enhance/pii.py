"""PII redaction: emails, phone numbers, IP addresses, credit cards (Luhn), IBANs (mod 97), API keys and secrets.

Every turn is scanned, code included: a key pasted into a code block is as leaked as one in prose (the
recognizers leave loopback addresses, versions, hashes and UUIDs alone, so code stays readable). Counts per
type go to the step's manifest entry."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any, Literal

from pydantic import Field, field_validator

from dataflywheel.ops.base import Mapper, OpConfig, Rejected
from dataflywheel.ops.enhance.pii_patterns import TYPES, find_pii, redact
from dataflywheel.ops.registry import register

PiiType = Literal["EMAIL", "PHONE", "IP_ADDRESS", "CREDIT_CARD", "IBAN", "SECRET"]


class PiiConfig(OpConfig):
    action: Literal["redact", "reject"] = "redact"
    """redact: replace each finding with its typed placeholder; reject: send the record to rejected/ with the
    types found as the reason (the step is then a filter)."""
    rejected_copy: Literal["redacted", "original"] = "redacted"
    """With ``action: reject``, what rejected/ keeps of a record with PII: its redacted copy (same id, so it can
    be traced to the input) or the original text. (The run's checkpoints/ hold the input as it was read:
    share the output and rejected/, not the whole run directory.)"""
    types: list[PiiType] = Field(default_factory=lambda: list(TYPES))
    """Which kinds of PII to look for."""
    placeholder: str = "<{type}>"
    """Replacement text; ``{type}`` is the PII type (EMAIL, PHONE, IP_ADDRESS, CREDIT_CARD, IBAN, SECRET)."""
    keep_reserved: bool = False
    """Leave addresses reserved for examples and private use alone: emails at example.com/.net/.org, .example, .test,
    .invalid, .localhost; private, documentation and link-local IPs (192.168.1.1, 10.0.0.5, 2001:db8::1). They
    identify no one and fill code samples; the default redacts them too."""
    entropy_ratio: float = Field(default=0.82, gt=0.0)
    """High-entropy tokens (24+ characters of mixed case and digits, not words) count as secrets when their
    entropy reaches this share of log2(length) bits a character; above 1 turns the entropy rule off (the
    provider formats and ``password = "..."`` assignments still apply)."""

    @field_validator("placeholder")
    @classmethod
    def _names_type(cls, value: str) -> str:
        try:  # a stray brace or another name is an error here, not on the first record
            value.format(type="EMAIL")
        except (KeyError, IndexError, ValueError) as err:
            raise ValueError(f"placeholder {value!r} may name only {{type}}: {err!r}") from None
        return value


def _texts(record: dict) -> list[str]:
    """Every text of a record: turns, tool-call arguments, chosen and rejected."""
    texts = []
    for m in record["messages"]:
        texts.append(m["content"])
        texts.extend(call["function"]["arguments"] for call in m.get("tool_calls") or ())
    return texts + [record[k]["content"] for k in ("chosen", "rejected") if record.get(k) is not None]


def _in_strings(value: Any, change) -> Any:
    """``value`` (parsed JSON) with ``change`` applied to every string in it, keys included, and to integers
    (an integer that ``change`` alters becomes the changed string)."""
    if isinstance(value, str):
        return change(value)
    if isinstance(value, list):
        return [_in_strings(v, change) for v in value]
    if isinstance(value, dict):
        return {change(k): _in_strings(v, change) for k, v in value.items()}
    if isinstance(value, int) and not isinstance(value, bool):  # a card or phone number written as a JSON number
        changed = change(str(value))
        return value if changed == str(value) else changed
    return value


@register
class PiiRedact(Mapper):
    """Redact emails, phones, IPs, cards, IBANs and secrets with typed placeholders (or reject the record).

    Placeholders: <EMAIL>, <PHONE>, <IP_ADDRESS>, <CREDIT_CARD>, <IBAN>, <SECRET>. ``action: reject`` sends
    records with PII to rejected/ with the types found. Counts per type are in the manifest."""

    name = "enhance.pii"
    Config = PiiConfig
    cpu_bound = True

    def writes_scores(self) -> tuple[str, ...]:
        return ()

    def _find(self, text: str):
        return find_pii(text, self.config.types, self.config.entropy_ratio, self.config.keep_reserved)

    def _redact(self, text: str, count: bool = True) -> str:
        spans = self._find(text)
        if count and self.config.action == "redact":
            for span in spans:
                self.counters[f"redacted {span.type}"] += 1
        return redact(text, spans, self.config.placeholder) if spans else text

    def _arguments(self, arguments: str) -> str:
        """Tool-call arguments: redacted inside their JSON strings, so they stay valid JSON."""
        try:
            parsed = json.loads(arguments)
        except ValueError:
            return self._redact(arguments)
        redacted = _in_strings(parsed, self._redact)
        return arguments if redacted == parsed else json.dumps(redacted, ensure_ascii=False)

    def _turn(self, message: dict) -> dict:
        out = {**message, "content": self._redact(message["content"])}
        if message.get("tool_calls"):
            out["tool_calls"] = [{**call, "function": {**call["function"],
                                                       "arguments": self._arguments(call["function"]["arguments"])}}
                                 for call in message["tool_calls"]]
        return out

    def map(self, record: dict) -> dict | Rejected:
        if self.config.action == "reject":
            return self._rejected(record) or record
        out = self._redacted(record)
        if out == record:
            return record
        self.counters["records with PII"] += 1
        return out

    def _redacted(self, record: dict) -> dict:
        out = dict(record)
        out["messages"] = [self._turn(m) for m in record["messages"]]
        for key in ("chosen", "rejected"):
            if record.get(key) is not None:
                out[key] = {**record[key], "content": self._redact(record[key]["content"])}
        quietly = lambda text: self._redact(text, count=False)  # noqa: E731
        # meta (extra input columns, the alpaca instruction/input split) and earlier steps' lineage details (a
        # rewrite's original text) are written with the record too
        if record.get("meta"):
            out["meta"] = _in_strings(record["meta"], quietly)
        if record.get("lineage"):
            out["lineage"] = _in_strings(record["lineage"], quietly)
        return out

    def _rejected(self, record: dict) -> Rejected | None:
        """The record rejected with the PII types found and their counts, or None when it holds none."""
        found = Counter(span.type for text in _texts(record) for span in self._find(text))
        if not found:
            return None
        self.counters.update({f"found {kind}": n for kind, n in found.items()})
        self.counters["records with PII"] += 1
        kept = self._redacted(record) if self.config.rejected_copy == "redacted" else None
        return Rejected("contains PII: " + ", ".join(f"{kind} x{n}" for kind, n in sorted(found.items())), record=kept)
