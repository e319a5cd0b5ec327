"""Field mapping: name the columns of a dataset whose names the readers do not know.

``{"prompt": "question", "response": "answer"}`` reads the row's ``question`` as the prompt and its
``answer`` as the response; a source may be a path into nested values (``choices.0.turns.0``). Without a
mapping the common names are recognised (see ``detect_format``).
"""

from __future__ import annotations

from typing import Any

from dataflywheel.records import RecordError

FIELD_NAMES = ("prompt", "response", "input", "system", "history", "messages", "conversations", "chosen",
               "rejected", "completion", "label", "text", "tools")
"""What a source field can be mapped to (the names the readers know)."""


def check_fields(fields: dict[str, str]) -> dict[str, str]:
    """The mapping, or ValueError naming an unknown target or an empty source."""
    for target, source in fields.items():
        if target not in FIELD_NAMES:
            raise ValueError(f"cannot map a field to {target!r}; map to one of {', '.join(FIELD_NAMES)}")
        if not isinstance(source, str) or not source:
            raise ValueError(f"the field mapped to {target!r} must be a field name, got {source!r}")
    return fields


def parse_fields(text: str) -> dict[str, str]:
    """``"prompt=question,response=answer"`` as a mapping; ValueError saying what is malformed."""
    fields: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        target, sep, source = part.partition("=")
        if not sep or not target.strip() or not source.strip():
            raise ValueError(f"--fields takes NAME=FIELD pairs separated by commas (prompt=question,response=answer); "
                             f"got {part!r}")
        fields[target.strip()] = source.strip()
    return check_fields(fields)


def _lookup(row: dict, path: str) -> Any:
    """The value at ``path``: a field name, or dot-separated keys and list indices into nested values."""
    if path in row:
        return row[path]
    value: Any = row
    walked = []
    for key in path.split("."):
        if isinstance(value, dict) and key in value:
            value = value[key]
        elif isinstance(value, list) and key.isdigit() and int(key) < len(value):
            value = value[int(key)]
        else:
            where = ".".join(walked) or "the row"
            raise RecordError(f"mapped field {path!r}: {where} has no {key!r}")
        walked.append(key)
    return value


def apply_fields(row: dict, fields: dict[str, str]) -> dict:
    """The row with each mapped source under its reader name. A plain source field is renamed; a nested path
    is copied (the rest of its top-level field is kept, as a column of meta)."""
    if not fields:
        return row
    values = {target: _lookup(row, source) for target, source in fields.items()}
    renamed = {source for source in fields.values() if source in row}
    out = {k: v for k, v in row.items() if k not in renamed}
    for target in values:
        if target in out:
            raise RecordError(f"the row has its own {target!r} field, which the mapping {target}={fields[target]} "
                              f"would hide; map that field as well")
    return {**out, **values}
