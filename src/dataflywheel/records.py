"""The record: one JSON-serialisable dict that flows through every step.

Fields: ``id`` (content hash), ``messages`` (OpenAI chat turns), optional ``chosen`` / ``rejected``
(competing final assistant turns of a preference record), ``meta``, ``scores`` and ``lineage``.

Three kinds: an SFT record ends with its assistant answer; a preference record's ``messages`` are the prompt
(ending with a user or tool turn) and ``chosen``/``rejected`` the answers; a prompt-only record has no
assistant turn at all (seed instructions, evaluation prompts). Tool use is kept as turns: an assistant turn
may carry OpenAI ``tool_calls`` and a ``tool`` turn holds a tool's result.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any, Literal

import orjson

ROLES = ("system", "user", "assistant", "tool")
RECORD_FIELDS = ("id", "messages", "chosen", "rejected", "meta", "scores", "lineage")


class RecordError(ValueError):
    """A record (or a source row) that does not fit the schema; the message says why."""


def record_id(record: dict) -> str:
    """Stable content hash of the text fields: same text, same id, on every machine."""
    content = {k: record.get(k) for k in ("messages", "chosen", "rejected") if record.get(k) is not None}
    try:  # for text, lists, objects, ints and bools orjson writes what json.dumps(ensure_ascii=False,
        # sort_keys=True, compact) writes (the ids of every record before it), ten times faster
        canonical = orjson.dumps(content, option=orjson.OPT_SORT_KEYS)
    except TypeError:  # a value orjson refuses (a lone surrogate, a huge int): the standard library decides
        canonical = json.dumps(content, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode("utf-8")
    return hashlib.sha256(canonical).hexdigest()[:20]


def make_record(
    messages: list[dict],
    *,
    chosen: dict | None = None,
    rejected: dict | None = None,
    meta: dict | None = None,
    scores: dict | None = None,
    lineage: list | None = None,
) -> dict:
    """Build a validated record and give it its id."""
    record: dict[str, Any] = {"messages": messages}
    if chosen is not None or rejected is not None:
        record["chosen"] = chosen
        record["rejected"] = rejected
    record["meta"] = meta or {}
    record["scores"] = scores or {}
    record["lineage"] = lineage or []
    validate_record(record)
    record["id"] = record_id(record)
    return record


def _check_message(message: Any, where: str) -> None:
    if not isinstance(message, dict):
        raise RecordError(f"{where} must be an object with 'role' and 'content', got {type(message).__name__}")
    missing = [k for k in ("role", "content") if k not in message]
    if missing:
        raise RecordError(f"{where} is missing {', '.join(repr(m) for m in missing)}")
    if message["role"] not in ROLES:
        raise RecordError(f"{where} has role {message['role']!r}; expected one of {', '.join(ROLES)}")
    if not isinstance(message["content"], str):
        raise RecordError(f"{where}.content must be a string, got {type(message['content']).__name__}")
    if "tool_calls" in message:
        _check_tool_calls(message, where)


def _check_tool_calls(message: dict, where: str) -> None:
    if message["role"] != "assistant":
        raise RecordError(f"{where} has tool_calls but role {message['role']!r}; only an assistant turn calls tools")
    calls = message["tool_calls"]
    if not isinstance(calls, list) or not calls:
        raise RecordError(f"{where}.tool_calls must be a non-empty list")
    for i, call in enumerate(calls):
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str) \
                or not isinstance(function.get("arguments"), str):
            raise RecordError(f"{where}.tool_calls[{i}] must be {{'function': {{'name': str, 'arguments': str}}}}")


def validate_record(record: Any) -> None:
    """Raise RecordError naming the first field that breaks the schema."""
    if not isinstance(record, dict):
        raise RecordError(f"a record must be an object, got {type(record).__name__}")
    unknown = set(record) - set(RECORD_FIELDS)
    if unknown:
        raise RecordError(f"unknown record field(s): {', '.join(sorted(unknown))}")
    messages = record.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RecordError("'messages' must be a non-empty list of chat turns")
    for i, message in enumerate(messages):
        _check_message(message, f"messages[{i}]")
    is_preference = record.get("chosen") is not None or record.get("rejected") is not None
    if is_preference:
        for key in ("chosen", "rejected"):
            _check_message(record.get(key), key)
            if record[key]["role"] != "assistant":
                raise RecordError(f"{key} must be an assistant turn, got role {record[key]['role']!r}")
    for key in ("meta", "scores"):
        if not isinstance(record.get(key, {}), dict):
            raise RecordError(f"'{key}' must be an object")
    for name, value in record.get("scores", {}).items():
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise RecordError(f"scores[{name!r}] must be a number, got {type(value).__name__}")
    if not isinstance(record.get("lineage", []), list):
        raise RecordError("'lineage' must be a list")


def is_preference(record: dict) -> bool:
    return record.get("chosen") is not None


def is_prompt_only(record: dict) -> bool:
    """A prompt with no answer yet: no assistant turn and no chosen/rejected."""
    return not is_preference(record) and all(m["role"] != "assistant" for m in record["messages"])


def turn_order_problem(record: dict) -> str | None:
    """Why a valid record cannot be trained on as it stands (None when it can): a conversation must open with
    a user turn (after system prompts), an SFT conversation must end with its assistant answer, and the
    prompt of a preference record must end with a user or tool turn. A lone assistant turn is plain text."""
    turns = record["messages"]
    body = [i for i, m in enumerate(turns) if m["role"] != "system"]
    roles = [turns[i]["role"] for i in body]
    if not body:
        return "the record holds only a system prompt: no user turn and no answer"
    if roles == ["assistant"] and not is_preference(record):
        return None
    if roles[0] != "user":
        return (f"the conversation starts with a{'n' if roles[0] == 'assistant' else ''} {roles[0]} turn, not a "
                f"user turn: messages[{body[0]}] answers no question")
    if is_preference(record):
        if roles[-1] not in ("user", "tool"):
            return (f"the prompt of a preference pair ends with an assistant turn: chosen and rejected must answer "
                    f"a user or tool turn (messages[{body[-1]}] is the assistant's)")
    elif "assistant" in roles and roles[-1] != "assistant":
        return (f"the conversation ends with a {roles[-1]} turn, not an assistant answer: messages[{body[-1]}] is "
                "left unanswered (drop the trailing turns, or keep only the prompt)")
    return None


def last_index(messages: list[dict], role: str) -> int | None:
    """Position of the last turn with this role (None when there is none)."""
    for i in range(len(messages) - 1, -1, -1):
        if messages[i]["role"] == role:
            return i
    return None


def instruction_text(record: dict) -> str:
    """The last user turn (the instruction the response answers)."""
    messages = record["messages"]
    last = last_index(messages, "assistant")
    end = len(messages) if is_preference(record) or last is None else last
    i = last_index(messages[:end], "user")
    return messages[i]["content"] if i is not None else ""


def response_text(record: dict) -> str:
    """The final assistant turn (``chosen`` for a preference record)."""
    if is_preference(record):
        return record["chosen"]["content"]
    i = last_index(record["messages"], "assistant")
    return record["messages"][i]["content"] if i is not None else ""


def prompt_turns(record: dict) -> list[dict]:
    """The turns before the final response (all of ``messages`` for a preference record)."""
    if is_preference(record):
        return list(record["messages"])
    i = last_index(record["messages"], "assistant")
    return list(record["messages"][:i]) if i is not None else list(record["messages"])


def repeats(record: dict) -> int:
    """How many times a record counts in training: ``meta.repeat`` (up-sampling by ``enhance.rebalance``), else 1."""
    value = record.get("meta", {}).get("repeat", 1)
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 1 else 1


def conversation_text(record: dict) -> str:
    """The prose of every turn joined, for operators that compare whole conversations (tool results and
    tool-call arguments are machine text, left out)."""
    turns = list(record["messages"])
    if is_preference(record):
        turns.append(record["chosen"])
    return "\n\n".join(m["content"] for m in turns if not _is_tool_text(m))


def _is_tool_text(message: dict) -> bool:
    return message["role"] == "tool" or ("tool_calls" in message and not message["content"])


TextField = Literal["instruction", "response", "conversation"]
"""The texts an operator can compare (see ``text_of``)."""


def text_of(record: dict, field: str) -> str:
    """Text an operator compares: 'instruction', 'response' or 'conversation'."""
    if field == "instruction":
        return instruction_text(record)
    if field == "response":
        return response_text(record)
    if field == "conversation":
        return conversation_text(record)
    raise ValueError(f"unknown text field {field!r}; use instruction, response or conversation")


def _finite(value: Any) -> bool:
    """No NaN or infinity anywhere in ``value`` (orjson would write them as null)."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(_finite(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return all(_finite(v) for v in value)
    return True


def _fast_json(value: Any) -> bytes | None:
    """orjson's compact UTF-8 text of ``value``, or None where the standard library must write it: a type
    orjson does not know, or NaN/infinity (orjson writes them as null; only where "null" appears can one
    have been lost)."""
    try:
        text = orjson.dumps(value)
    except TypeError:
        return None
    return text if b"null" not in text or _finite(value) else None


def _standard_json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def dumps(value: Any) -> str:
    """Canonical compact JSON text (checkpoints, outputs): orjson, or the standard library where a value
    holds NaN or infinity (kept as JSON's NaN/Infinity literals, as Python reads them back)."""
    text = _fast_json(value)
    return text.decode("utf-8") if text is not None else _standard_json(value)


def dump_bytes(value: Any) -> bytes:
    """``dumps`` as the UTF-8 bytes a file holds (orjson's own output: nothing decoded and encoded again)."""
    text = _fast_json(value)
    return text if text is not None else _standard_json(value).encode("utf-8")


def loads(text: str | bytes) -> Any:
    """Parse JSON written by ``dumps`` (fast path by orjson; NaN literals by the standard library)."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)
