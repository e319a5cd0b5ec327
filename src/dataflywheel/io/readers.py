"""Reading: how one source row (a dict) becomes a record, and which format a row is in.

A row that cannot become a record raises RecordError with the reason: a missing or mistyped field, turns
in an order nothing can be trained on (an assistant first, a user last), chosen and rejected transcripts
that differ before their answers.
"""

from __future__ import annotations

import json
from typing import Any, Callable

from dataflywheel.io.pairs import is_transcript, parse_transcript, split_pair
from dataflywheel.io.turns import message_from_turn, messages_from_turns
from dataflywheel.records import RecordError, loads, make_record, turn_order_problem

PROMPT_KEYS = ("instruction", "prompt", "question", "query")
INPUT_KEYS = ("input", "context")
"""Text that extends the instruction (Dolly calls it context)."""
RESPONSE_KEYS = ("output", "response", "answer")
CHAT_KEYS = ("messages", "conversations", "conversation")


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


def _extras(row: dict, used: tuple) -> dict:
    return {k: v for k, v in row.items() if k not in used}


def _first_key(row: dict, keys: tuple[str, ...]) -> str | None:
    return next((k for k in keys if row.get(k) is not None), None)


def detect_format(row: Any) -> str:
    """Guess a row's format from its fields; raise RecordError when none fits."""
    if not isinstance(row, dict):
        raise RecordError(f"a row must be a JSON object, got {type(row).__name__}")
    keys = set(row)
    if {"step", "reason"} <= keys and keys & {"record", "raw"}:
        return "rejects"
    chat = _first_key(row, CHAT_KEYS)
    if chat is not None:
        turns = row[chat]
        first = turns[0] if isinstance(turns, list) and turns else None
        return "sharegpt" if isinstance(first, dict) and "from" in first else "messages"
    if {"chosen", "rejected"} <= keys:
        if "prompt" in keys:
            return "trl_messages" if isinstance(row["prompt"], list) else "trl"
        if keys & set(PROMPT_KEYS):
            return "alpaca"
        if is_transcript(row["chosen"]):
            return "hh_rlhf"
        if isinstance(row["chosen"], list):
            return "trl_messages"
        raise RecordError("chosen and rejected with no prompt field: HH-RLHF transcripts start with "
                          "'\\n\\nHuman: '; otherwise name the prompt field, e.g. --fields prompt=FIELD")
    if {"prompt", "completion"} <= keys:
        return "kto" if isinstance(row.get("label"), bool) else "completion"
    if keys & set(PROMPT_KEYS):
        return "alpaca"
    if "text" in keys:
        return "text"
    raise RecordError(f"cannot tell the format from fields {sorted(keys)}; name them, e.g. "
                      "--fields prompt=FIELD,response=FIELD (input.fields in a recipe)")


def _system(row: dict) -> list[dict]:
    return [{"role": "system", "content": _string(row, "system")}] if row.get("system") else []


def _history(row: dict) -> list[dict]:
    """LLaMA-Factory's earlier turns: ``[[prompt, response], ...]``."""
    history = row.get("history")
    if history is None:
        return []
    if not isinstance(history, list):
        raise RecordError(f"field 'history' must be a list of [prompt, response] pairs, got {type(history).__name__}")
    turns = []
    for i, pair in enumerate(history):
        if not (isinstance(pair, (list, tuple)) and len(pair) == 2 and all(isinstance(t, str) for t in pair)):
            raise RecordError(f"history[{i}] must be a [prompt, response] pair of strings")
        turns += [{"role": "user", "content": pair[0]}, {"role": "assistant", "content": pair[1]}]
    return turns


def _answer(row: dict, key: str) -> dict:
    """``chosen`` / ``rejected`` / a completion: a string, one turn, or a list holding one turn."""
    value = row.get(key)
    if isinstance(value, str):
        return {"role": "assistant", "content": value}
    if isinstance(value, list):
        if len(value) != 1:
            raise RecordError(f"field {key!r} must hold exactly one assistant turn, got {len(value)}")
        value = value[0]
    if isinstance(value, dict):
        return message_from_turn(value, key)
    raise RecordError(f"field {key!r} must be a string or an assistant turn, got {type(value).__name__}")


def _prompt(row: dict, key: str) -> list[dict]:
    value = row[key]
    if isinstance(value, list):
        return messages_from_turns(value, key)
    return [{"role": "user", "content": _string(row, key)}]


def _pair(row: dict) -> tuple[dict, dict] | tuple[None, None]:
    if row.get("chosen") is None and row.get("rejected") is None:
        return None, None
    _require(row, "chosen", "rejected")
    return _answer(row, "chosen"), _answer(row, "rejected")


# ---- one reader per format ----------------------------------------------------------------------


def _from_alpaca(row: dict) -> dict:
    prompt_key = _first_key(row, PROMPT_KEYS)
    if prompt_key is None:
        raise RecordError("missing field(s) 'instruction' (or prompt, question, query)")
    response_key = _first_key(row, RESPONSE_KEYS)
    input_key = _first_key(row, INPUT_KEYS) or "input"
    extra_input = _string(row, input_key, optional=True)
    if isinstance(row[prompt_key], list):  # a conversational prompt (TRL's prompt-only format)
        if extra_input:
            raise RecordError(f"field {input_key!r} cannot extend a prompt given as chat turns ({prompt_key!r})")
        prompt = _prompt(row, prompt_key)
        instruction = prompt[-1]["content"] if prompt else ""
    else:
        instruction = _string(row, prompt_key)
        prompt = [{"role": "user", "content": f"{instruction}\n\n{extra_input}" if extra_input else instruction}]
    messages = _system(row) + _history(row) + prompt
    chosen, rejected = _pair(row)
    if chosen is None and response_key is not None:
        messages.append({"role": "assistant", "content": _string(row, response_key)})
    meta = _extras(row, (prompt_key, input_key, response_key, "system", "history", "chosen", "rejected"))
    meta["alpaca"] = {"instruction": instruction, "input": row.get(input_key), "response_key": response_key,
                      **({"history": True} if "history" in row else {})}
    return make_record(messages, chosen=chosen, rejected=rejected, meta=meta)


def _from_chat(row: dict) -> dict:
    key = _first_key(row, CHAT_KEYS)
    if key is None:
        raise RecordError("missing field(s) 'messages' (or conversations)")
    messages = _system(row) + messages_from_turns(row[key], key)
    chosen, rejected = _pair(row)
    return make_record(messages, chosen=chosen, rejected=rejected,
                       meta=_extras(row, (key, "system", "chosen", "rejected")))


def _from_trl(row: dict) -> dict:
    _require(row, "prompt", "chosen", "rejected")
    chosen, rejected = _pair(row)
    return make_record(_prompt(row, "prompt"), chosen=chosen, rejected=rejected,
                       meta=_extras(row, ("prompt", "chosen", "rejected")))


def _from_trl_messages(row: dict) -> dict:
    if row.get("prompt") is not None:
        return _from_trl(row)
    _require(row, "chosen", "rejected")  # TRL's implicit prompt: whole conversations that share their start
    messages, chosen, rejected = split_pair(messages_from_turns(row["chosen"], "chosen"),
                                            messages_from_turns(row["rejected"], "rejected"))
    return make_record(messages, chosen=chosen, rejected=rejected, meta=_extras(row, ("chosen", "rejected")))


def _from_hh_rlhf(row: dict) -> dict:
    _require(row, "chosen", "rejected")
    messages, chosen, rejected = split_pair(parse_transcript(_string(row, "chosen"), "chosen"),
                                            parse_transcript(_string(row, "rejected"), "rejected"))
    return make_record(messages, chosen=chosen, rejected=rejected, meta=_extras(row, ("chosen", "rejected")))


def _from_completion(row: dict) -> dict:
    _require(row, "prompt", "completion")
    completion = row["completion"]
    answer = messages_from_turns(completion, "completion") if isinstance(completion, list) \
        else [{"role": "assistant", "content": _string(row, "completion")}]
    return make_record(_prompt(row, "prompt") + answer, meta=_extras(row, ("prompt", "completion")))


def _from_kto(row: dict) -> dict:
    _require(row, "prompt", "completion", "label")
    if isinstance(row["label"], str) and row["label"].lower() in ("true", "false"):  # a CSV cell is text
        row = {**row, "label": row["label"].lower() == "true"}
    if not isinstance(row["label"], bool):
        raise RecordError(f"field 'label' must be true or false, got {type(row['label']).__name__}")
    return _from_completion(row)


def _from_text(row: dict) -> dict:
    _require(row, "text")
    return make_record([{"role": "assistant", "content": _string(row, "text")}], meta=_extras(row, ("text",)))


def _from_rejects(row: dict) -> dict:
    """A row of our own ``rejected/*.parquet``: the record as it was rejected, with the step and reason."""
    _require(row, "step", "reason")
    if row.get("record") is None:
        raise RecordError(f"rejected by step {row['step']!r} as unreadable, {row['reason']}")
    try:
        record = loads(row["record"])
    except json.JSONDecodeError as err:
        raise RecordError(f"field 'record' is not JSON: {err.msg}") from err
    if not isinstance(record, dict) or "messages" not in record:
        raise RecordError("field 'record' must hold a record with 'messages'")
    meta = record.get("meta") or {}
    meta = {**meta, "rejected": {"step": row["step"], "reason": row["reason"],
                                 "source": meta.get("source") or row.get("source")}}
    return make_record(record["messages"], chosen=record.get("chosen"), rejected=record.get("rejected"), meta=meta,
                       scores=record.get("scores"), lineage=record.get("lineage"))


READERS: dict[str, Callable[[dict], dict]] = {
    "alpaca": _from_alpaca, "sharegpt": _from_chat, "messages": _from_chat, "trl": _from_trl,
    "trl_messages": _from_trl_messages, "hh_rlhf": _from_hh_rlhf, "completion": _from_completion, "kto": _from_kto,
    "text": _from_text, "rejects": _from_rejects,
}


def row_to_record(row: Any, fmt: str) -> dict:
    """Convert one source row; raise RecordError with the reason when it does not fit ``fmt`` or cannot be
    trained on."""
    if not isinstance(row, dict):
        raise RecordError(f"a row must be a JSON object, got {type(row).__name__}")
    record = READERS[fmt](row)
    problem = turn_order_problem(record)
    if problem:
        raise RecordError(problem)
    return record
