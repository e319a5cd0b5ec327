"""Parsers for messy model output: numbered or bulleted lists and labelled fields ("Instruction: / Input: /
Output:"). They never raise: what cannot be read is returned as ``junk`` for the caller to count and keep."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_FENCE = re.compile(r"^\s*```[\w+-]*\s*$")
# "1.", "1)", "(1)", "#1:", "Task 1:", "**Instruction 2.**" - a number followed by whitespace or the line's end,
# so "1.5 kg" is not a marker
_NUMBERED = re.compile(r"^\s*(?:\*\*)?\(?(?:(?:task|instruction|question|example)\s*)?#?(\d{1,3})\s*(?:[.):\]-]|\*\*)+"
                       r"(?:\*\*)?(?:\s+|$)(.*)$", re.IGNORECASE)
_BULLET = re.compile(r"^\s*[-*•+]\s+(.*)$")
_LABEL = re.compile(r"^\s*(?:\*\*)?(?:new\s+)?(instruction|task|input|output|class label|label)(?:\*\*)?\s*:\s*(?:\*\*)?"
                    r"\s*(.*)$", re.IGNORECASE)
_QUOTES = [('"', '"'), ("'", "'"), ("“", "”"), ("‘", "’"), ("`", "`"), ("**", "**")]


@dataclass
class Parsed:
    """What a parser read, and the non-empty lines it could not place."""

    items: list = field(default_factory=list)
    junk: list[str] = field(default_factory=list)


def strip_fences(text: str) -> str:
    """The text without Markdown code-fence lines (their content stays)."""
    return "\n".join(line for line in text.splitlines() if not _FENCE.match(line))


def clean_item(text: str) -> str:
    """One item: whitespace collapsed, a leading 'Instruction:'/'Task:' label and wrapping quotes removed."""
    text = re.sub(r"\s+", " ", text).strip()
    label = _LABEL.match(text)
    if label and label.group(1).lower() in ("instruction", "task"):
        text = label.group(2).strip()
    changed = True
    while changed and len(text) >= 2:
        changed = False
        for left, right in _QUOTES:
            if text.startswith(left) and text.endswith(right) and len(text) >= len(left) + len(right):
                text, changed = text[len(left):-len(right)].strip(), True
    return text


def parse_list(text: str, leading_item: bool = False) -> Parsed:
    """Items of a numbered ("1.", "1)", "Task 1:") or bulleted list; an item may run over several lines until a
    blank line. ``leading_item``: the text before the first marker is an item too (the prompt ended with the
    item's number, as Self-Instruct's "9."). Lines after a blank line that start no item are junk."""
    parsed, current, closed = Parsed(), None, False
    lines = strip_fences(text).splitlines()
    if leading_item and lines and lines[0].strip() and not (_NUMBERED.match(lines[0]) or _BULLET.match(lines[0])):
        current = lines.pop(0)
    for line in lines:
        marker = _NUMBERED.match(line) or _BULLET.match(line)
        if marker:
            if current is not None:
                parsed.items.append(current)
            current, closed = marker.groups()[-1], False
        elif not line.strip():
            closed = current is not None or closed
        elif current is not None and not closed:
            current += " " + line
        else:
            parsed.junk.append(line.strip())
    if current is not None:
        parsed.items.append(current)
    items = [clean_item(item) for item in parsed.items]
    parsed.items = [item for item in items if item]
    return parsed


def parse_fields(text: str, first: str | None = None) -> Parsed:
    """Blocks of labelled fields ("Instruction:", "Input:", "Output:", "Class label:"), as dicts keyed by the
    lower-cased label ('label' for 'class label', 'instruction' for 'task'); a repeated label starts a new
    block and lines without a label continue the field before them. ``first``: the field the text opens with
    when the prompt already wrote its label."""
    parsed, block, key = Parsed(), {}, first
    if first:
        block[first] = ""
    for line in strip_fences(text).splitlines():
        label = _LABEL.match(line)
        if label:
            name = {"class label": "label", "task": "instruction"}.get(label.group(1).lower(), label.group(1).lower())
            if name in block:
                parsed.items.append(block)
                block = {}
            block[name], key = label.group(2), name
        elif key is not None:
            block[key] += "\n" + line
        elif line.strip():
            parsed.junk.append(line.strip())
    if block:
        parsed.items.append(block)
    parsed.items = [{k: v.strip() for k, v in b.items()} for b in parsed.items]
    return parsed
