"""Row formats: how one source row (a dict) becomes a record and back.

Formats: ``alpaca`` (instruction/input/output), ``sharegpt`` (conversations: [{from, value}]),
``messages`` (OpenAI chat), ``trl`` (prompt/chosen/rejected strings), ``trl_messages``
(prompt/chosen/rejected as chat turns), ``completion`` (prompt/completion) and ``text``.
Fields a format does not use are kept in ``meta`` and written back, so A -> records -> A is lossless.
"""

from __future__ import annotations

import json
from typing import Any, Callable

from dataflywheel.records import RecordError, is_preference, make_record

FORMATS = ("alpaca", "sharegpt", "messages", "trl", "trl_messages", "completion", "text")

_SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                   "chatgpt": "assistant", "bard": "assistant", "bing": "assistant", "system": "system"}
_SHAREGPT_NAMES = {"user": "human", "assistant": "gpt", "system": "system"}
# Keys the reader adds to meta itself; never written back as source columns.
READER_META_KEYS = ("source",)


def _require(row: dict, *keys: str) -> None:
    missing = [k for k in keys if k not in row or row[k] is None]
    if missing:
        raise RecordError(f"missing field(s) {', '.join(repr(k) for k in missing)}")


def _string(row: dict, key: str, *, optional: bool = False) -> str:
    value = row.get(key)
    if value is None and optional:
        return ""
    if not isinstance(value, str):
        raise RecordError(f"field {key!r} must be a string, got {type(value).__name__}")
    return value


def _extras(row: dict, used: tuple[str, ...]) -> dict:
    return {k: v for k, v in row.items() if k not in used}


def detect_format(row: Any) -> str:
    """Guess a row's format from its keys; raise RecordError when none fits."""
    if not isinstance(row, dict):
        raise RecordError(f"a row must be a JSON object, got {type(row).__name__}")
    keys = set(row)
    if "messages" in keys:
        return "messages"
    if "conversations" in keys:
        return "sharegpt"
    if {"prompt", "chosen", "rejected"} <= keys:
        return "trl_messages" if isinstance(row["prompt"], list) else "trl"
    if "instruction" in keys and ("output" in keys or "response" in keys):
        return "alpaca"
    if {"prompt", "completion"} <= keys:
        return "completion"
    if "text" in keys:
        return "text"
    raise RecordError(f"cannot tell the format from fields {sorted(keys)}; pass the format explicitly")


# ---- readers: row -> record -------------------------------------------------------------------


def _from_alpaca(row: dict) -> dict:
    response_key = "response" if "response" in row and "output" not in row else "output"
    _require(row, "instruction", response_key)
    instruction = _string(row, "instruction")
    extra_input = _string(row, "input", optional=True)
    output = _string(row, response_key)
    messages = []
    if row.get("system"):
        messages.append({"role": "system", "content": _string(row, "system")})
    user = f"{instruction}\n\n{extra_input}" if extra_input else instruction
    messages += [{"role": "user", "content": user}, {"role": "assistant", "content": output}]
    meta = _extras(row, ("instruction", "input", "output", "response", "system"))
    meta["alpaca"] = {"instruction": instruction, "input": row.get("input"), "response_key": response_key}
    return make_record(messages, meta=meta)


def _turns_from_openai(value: Any, field: str) -> list[dict]:
    if not isinstance(value, list):
        raise RecordError(f"field {field!r} must be a list of chat turns, got {type(value).__name__}")
    return value


def _from_messages(row: dict) -> dict:
    _require(row, "messages")
    messages = _turns_from_openai(row["messages"], "messages")
    chosen = row.get("chosen")
    rejected = row.get("rejected")
    meta = _extras(row, ("messages", "chosen", "rejected"))
    return make_record(messages, chosen=chosen, rejected=rejected, meta=meta)


def _sharegpt_turn(turn: Any, where: str) -> dict:
    if not isinstance(turn, dict) or "from" not in turn or "value" not in turn:
        raise RecordError(f"{where} must be an object with 'from' and 'value'")
    role = _SHAREGPT_ROLES.get(turn["from"])
    if role is None:
        raise RecordError(f"{where} has unknown speaker {turn['from']!r}")
    return {"role": role, "content": turn["value"]}


def _from_sharegpt(row: dict) -> dict:
    _require(row, "conversations")
    turns = row["conversations"]
    if not isinstance(turns, list):
        raise RecordError(f"field 'conversations' must be a list, got {type(turns).__name__}")
    messages = []
    if row.get("system"):
        messages.append({"role": "system", "content": _string(row, "system")})
    messages += [_sharegpt_turn(t, f"conversations[{i}]") for i, t in enumerate(turns)]
    chosen = _sharegpt_turn(row["chosen"], "chosen") if row.get("chosen") is not None else None
    rejected = _sharegpt_turn(row["rejected"], "rejected") if row.get("rejected") is not None else None
    meta = _extras(row, ("conversations", "system", "chosen", "rejected"))
    return make_record(messages, chosen=chosen, rejected=rejected, meta=meta)


def _from_trl(row: dict) -> dict:
    _require(row, "prompt", "chosen", "rejected")
    messages = [{"role": "user", "content": _string(row, "prompt")}]
    chosen = {"role": "assistant", "content": _string(row, "chosen")}
    rejected = {"role": "assistant", "content": _string(row, "rejected")}
    return make_record(messages, chosen=chosen, rejected=rejected,
                       meta=_extras(row, ("prompt", "chosen", "rejected")))


def _single_assistant(value: Any, field: str) -> dict:
    turns = _turns_from_openai(value, field)
    if len(turns) != 1:
        raise RecordError(f"field {field!r} must hold exactly one assistant turn, got {len(turns)}")
    return turns[0]


def _from_trl_messages(row: dict) -> dict:
    _require(row, "prompt", "chosen", "rejected")
    return make_record(_turns_from_openai(row["prompt"], "prompt"),
                       chosen=_single_assistant(row["chosen"], "chosen"),
                       rejected=_single_assistant(row["rejected"], "rejected"),
                       meta=_extras(row, ("prompt", "chosen", "rejected")))


def _from_completion(row: dict) -> dict:
    _require(row, "prompt", "completion")
    messages = [{"role": "user", "content": _string(row, "prompt")},
                {"role": "assistant", "content": _string(row, "completion")}]
    return make_record(messages, meta=_extras(row, ("prompt", "completion")))


def _from_text(row: dict) -> dict:
    _require(row, "text")
    return make_record([{"role": "assistant", "content": _string(row, "text")}],
                       meta=_extras(row, ("text",)))


READERS: dict[str, Callable[[dict], dict]] = {
    "alpaca": _from_alpaca, "sharegpt": _from_sharegpt, "messages": _from_messages, "trl": _from_trl,
    "trl_messages": _from_trl_messages, "completion": _from_completion, "text": _from_text,
}


def row_to_record(row: Any, fmt: str) -> dict:
    """Convert one source row; raise RecordError with the reason when it does not fit ``fmt``."""
    if not isinstance(row, dict):
        raise RecordError(f"a row must be a JSON object, got {type(row).__name__}")
    return READERS[fmt](row)


# ---- writers: record -> row -------------------------------------------------------------------


def _split(record: dict) -> tuple[str, str, str]:
    """(system, user, assistant) of a single-turn record; RecordError if it has more turns."""
    roles = [m["role"] for m in record["messages"]]
    body = roles[1:] if roles and roles[0] == "system" else roles
    if body != ["user", "assistant"]:
        raise RecordError(f"this format holds one user and one assistant turn; the record has {roles}")
    system = record["messages"][0]["content"] if roles[0] == "system" else ""
    return system, record["messages"][-2]["content"], record["messages"][-1]["content"]


def _to_alpaca(record: dict, meta: dict) -> dict:
    system, user, output = _split(record)
    source = meta.pop("alpaca", None) or {}
    instruction, extra_input = user, ""
    joined = f"{source.get('instruction')}\n\n{source.get('input')}" if source.get("input") else source.get("instruction")
    if joined == user:  # unchanged since reading: restore the original instruction/input split
        instruction, extra_input = source["instruction"], source.get("input")
    row: dict[str, Any] = {"instruction": instruction}
    if extra_input is not None:
        row["input"] = extra_input
    row[source.get("response_key", "output")] = output
    if system:
        row["system"] = system
    return row


def _to_sharegpt(record: dict, meta: dict) -> dict:
    turns = record["messages"]
    row: dict[str, Any] = {}
    if turns[0]["role"] == "system":
        row["system"] = turns[0]["content"]
        turns = turns[1:]
    row["conversations"] = [{"from": _SHAREGPT_NAMES[m["role"]], "value": m["content"]} for m in turns]
    if is_preference(record):
        for key in ("chosen", "rejected"):
            row[key] = {"from": "gpt", "value": record[key]["content"]}
    return row


def _to_messages(record: dict, meta: dict) -> dict:
    row: dict[str, Any] = {"messages": record["messages"]}
    if is_preference(record):
        row["chosen"], row["rejected"] = record["chosen"], record["rejected"]
    return row


def _need_preference(record: dict, fmt: str) -> None:
    if not is_preference(record):
        raise RecordError(f"format {fmt!r} needs a preference record (chosen/rejected)")


def _to_trl(record: dict, meta: dict) -> dict:
    _need_preference(record, "trl")
    if len(record["messages"]) != 1 or record["messages"][0]["role"] != "user":
        raise RecordError("format 'trl' holds a single user prompt; use 'trl_messages' for multi-turn prompts")
    return {"prompt": record["messages"][0]["content"], "chosen": record["chosen"]["content"],
            "rejected": record["rejected"]["content"]}


def _to_trl_messages(record: dict, meta: dict) -> dict:
    _need_preference(record, "trl_messages")
    return {"prompt": record["messages"], "chosen": [record["chosen"]], "rejected": [record["rejected"]]}


def _to_completion(record: dict, meta: dict) -> dict:
    system, user, assistant = _split(record)
    if system:
        raise RecordError("format 'completion' has no system prompt; use 'messages'")
    return {"prompt": user, "completion": assistant}


def _to_text(record: dict, meta: dict) -> dict:
    turns = record["messages"] + ([record["chosen"]] if is_preference(record) else [])
    if len(turns) == 1:
        return {"text": turns[0]["content"]}
    return {"text": "\n\n".join(f"{m['role']}: {m['content']}" for m in turns)}


WRITERS: dict[str, Callable[[dict, dict], dict]] = {
    "alpaca": _to_alpaca, "sharegpt": _to_sharegpt, "messages": _to_messages, "trl": _to_trl,
    "trl_messages": _to_trl_messages, "completion": _to_completion, "text": _to_text,
}


def training_format(record: dict) -> str:
    """The format TRL trains on: chat ``messages`` for SFT, ``trl_messages`` for DPO."""
    return "trl_messages" if is_preference(record) else "messages"


def record_to_row(record: dict, fmt: str, *, with_meta: bool = True, with_id: bool = False,
                  with_scores: bool = False, with_lineage: bool = False) -> dict:
    """Convert a record to a row of ``fmt`` ('auto' = the TRL training format)."""
    fmt = training_format(record) if fmt == "auto" else fmt
    meta = {k: v for k, v in record.get("meta", {}).items() if k not in READER_META_KEYS}
    row = WRITERS[fmt](record, meta)
    meta.pop("alpaca", None)
    if with_id:
        row["id"] = record["id"]
    if with_meta:
        for key, value in meta.items():
            row.setdefault(key, value)
    if with_scores and record.get("scores"):
        row["scores"] = record["scores"]
    if with_lineage and record.get("lineage"):
        row["lineage"] = record["lineage"]
    return row


# ---- our own fields in rows: id, scores, lineage ----------------------------------------------


def _as_scores(value: Any) -> dict | None:
    """A score dict from JSON, a Parquet struct (nulls = absent) or JSON text; None if it is not one."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            return None
    if not isinstance(value, dict):
        return None
    scores = {k: v for k, v in value.items() if v is not None}
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in scores.values()):
        return None
    return {k: float(v) for k, v in scores.items()}


def _as_lineage(value: Any) -> list | None:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            return None
    return value if isinstance(value, list) and all(isinstance(e, dict) for e in value) else None


def split_reserved(row: Any) -> tuple[Any, dict]:
    """The row without the fields our writers add (scores, lineage, id), and those fields.

    A field that does not have our shape (e.g. a dataset's own string ``id``) stays in the row."""
    if not isinstance(row, dict):
        return row, {}
    kept: dict = {}
    scores = _as_scores(row["scores"]) if "scores" in row else None
    lineage = _as_lineage(row["lineage"]) if "lineage" in row else None
    if scores is not None:
        kept["scores"] = scores
    if lineage is not None:
        kept["lineage"] = lineage
    if isinstance(row.get("id"), str):
        kept["id"] = row["id"]
    drop = set(kept) - {"id"}
    return ({k: v for k, v in row.items() if k not in drop} if drop else row), kept


def restore_reserved(record: dict, kept: dict) -> dict:
    """Put scores and lineage back; drop a written ``id`` that is this record's own (same content hash)."""
    if "scores" in kept:
        record["scores"] = {**kept["scores"], **record["scores"]}
    if "lineage" in kept:
        record["lineage"] = kept["lineage"]
    if record["meta"].get("id") == record["id"]:
        del record["meta"]["id"]
    return record
