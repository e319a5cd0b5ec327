"""Writing: how a record becomes a row of a format, and how records change kind on the way.

A format that holds one answer per record refuses a preference pair unless told what to keep
(``preference``: the chosen answer, or both as two records labelled true and false); a format of pairs
refuses an SFT record (a pair cannot be made up). Every refusal names the record and the way out.
"""

from __future__ import annotations

from typing import Any, Callable

from dataflywheel.io.formats import PAIR_FORMATS, PREFERENCE_CHOICES
from dataflywheel.io.pairs import format_transcript
from dataflywheel.io.turns import sharegpt_turn
from dataflywheel.records import RecordError, is_preference, is_prompt_only, make_record, prompt_turns

READER_META_KEYS = ("source",)
"""Keys the reader adds to meta itself; never written back as source columns."""


def _need_pair(record: dict, fmt: str) -> None:
    if not is_preference(record):
        raise RecordError(f"format {fmt!r} holds preference pairs (a chosen and a rejected answer) and this record "
                          "has one answer, which cannot be made into a pair: make pairs first "
                          "(synth.preference_pairs), or write an SFT format (messages, alpaca, sharegpt)")


def _need_one_answer(record: dict, fmt: str) -> None:
    if is_preference(record):
        raise RecordError(f"format {fmt!r} holds one answer per record and this is a preference pair: say what to "
                          "keep with --preference chosen (the chosen answer) or --preference both (two records, "
                          "labelled true and false; output.preference in a recipe), or write a format of pairs "
                          f"({', '.join(PAIR_FORMATS)}, sharegpt, alpaca)")


def _need_answer(record: dict, fmt: str) -> None:
    if is_prompt_only(record):
        raise RecordError(f"format {fmt!r} needs an answer and this record is a prompt only: answer it first, "
                          "or write messages, alpaca or sharegpt")


def _system_and_turns(record: dict) -> tuple[str, list[dict]]:
    turns = record["messages"]
    if turns[0]["role"] == "system":
        return turns[0]["content"], turns[1:]
    return "", turns


def _plain(record: dict, fmt: str) -> None:
    """Formats of plain text turns cannot hold tool calls and results."""
    turns = [(f"messages[{i}]", m) for i, m in enumerate(record["messages"])]
    turns += [(key, record[key]) for key in ("chosen", "rejected") if record.get(key) is not None]
    for where, turn in turns:
        if turn["role"] == "tool" or turn.get("tool_calls"):
            raise RecordError(f"format {fmt!r} holds plain user and assistant text and {where} is a tool "
                              f"{'call' if turn.get('tool_calls') else 'result'}: write 'sharegpt' or 'messages'")


def _with_tools(row: dict, meta: dict) -> dict:
    """Tool schemas travel beside the turns (a column of their own, as TRL and LLaMA-Factory read them)."""
    if "tools" in meta:
        row["tools"] = meta.pop("tools")
    return row


# ---- one writer per format ----------------------------------------------------------------------


def _to_alpaca(record: dict, meta: dict) -> dict:
    source = meta.pop("alpaca", None) or {}
    system, turns = _system_and_turns(record)
    _plain(record, "alpaca")
    answer = None
    if not is_preference(record) and turns[-1]["role"] == "assistant":
        turns, answer = turns[:-1], turns[-1]["content"]
    roles = [t["role"] for t in turns]
    if roles != ["user", "assistant"] * (len(turns) // 2) + ["user"]:
        raise RecordError(f"format 'alpaca' holds [user, assistant] pairs of history and a final user turn; the "
                          f"record's turns are {roles}: write 'sharegpt' or 'messages'")
    history = [[turns[i]["content"], turns[i + 1]["content"]] for i in range(0, len(turns) - 1, 2)]
    user = turns[-1]["content"]
    instruction, extra_input = user, ""
    joined = source.get("instruction")
    if source.get("input"):
        joined = f"{joined}\n\n{source['input']}"
    if joined == user:  # unchanged since reading: restore the original instruction/input split
        instruction, extra_input = source["instruction"], source.get("input")
    row: dict[str, Any] = {"instruction": instruction}
    if extra_input is not None:
        row["input"] = extra_input
    if answer is not None:
        row[source["response_key"] if source.get("response_key") in ("output", "response") else "output"] = answer
    if is_preference(record):
        row["chosen"], row["rejected"] = record["chosen"]["content"], record["rejected"]["content"]
    if system:
        row["system"] = system
    if history or source.get("history"):
        row["history"] = history
    return row


def _to_sharegpt(record: dict, meta: dict) -> dict:
    system, turns = _system_and_turns(record)
    row: dict[str, Any] = {"conversations": [sharegpt_turn(m, f"messages[{i}]") for i, m in enumerate(turns)]}
    if system:
        row["system"] = system
    if is_preference(record):
        for key in ("chosen", "rejected"):
            row[key] = sharegpt_turn(record[key], key)
    return _with_tools(row, meta)


def _to_messages(record: dict, meta: dict) -> dict:
    if record.get("chosen") is not None:
        _need_one_answer(record, "messages")
    row = {"messages": record["messages"]}
    return _with_tools(row, meta) if meta else row


def _to_trl(record: dict, meta: dict) -> dict:
    _need_pair(record, "trl")
    if len(record["messages"]) != 1 or record["messages"][0]["role"] != "user":
        raise RecordError("format 'trl' holds a single user prompt; use 'trl_messages' for multi-turn prompts")
    return {"prompt": record["messages"][0]["content"], "chosen": record["chosen"]["content"],
            "rejected": record["rejected"]["content"]}


def _to_trl_messages(record: dict, meta: dict) -> dict:
    _need_pair(record, "trl_messages")
    return _with_tools({"prompt": record["messages"], "chosen": [record["chosen"]],
                        "rejected": [record["rejected"]]}, meta)


def _to_hh_rlhf(record: dict, meta: dict) -> dict:
    _need_pair(record, "hh_rlhf")
    if record["messages"][0]["role"] == "system":
        raise RecordError("format 'hh_rlhf' has no system prompt; write 'trl_messages'")
    return {key: format_transcript(record["messages"] + [record[key]], key) for key in ("chosen", "rejected")}


def _to_completion(record: dict, meta: dict) -> dict:
    _need_one_answer(record, "completion")
    _need_answer(record, "completion")
    system, turns = _system_and_turns(record)
    if system or [t["role"] for t in turns] != ["user", "assistant"]:
        raise RecordError("format 'completion' holds one user prompt and one answer, no system prompt; "
                          "write 'messages'")
    _plain(record, "completion")
    return {"prompt": turns[0]["content"], "completion": turns[1]["content"]}


def _to_kto(record: dict, meta: dict) -> dict:
    _need_one_answer(record, "kto")
    _need_answer(record, "kto")
    label = meta.pop("label", None)
    if not isinstance(label, bool):
        raise RecordError("format 'kto' needs a label (true: a desirable answer, false: an undesirable one) and "
                          "this record has none: write pairs with --preference both, or read a KTO dataset")
    return _with_tools({"prompt": prompt_turns(record), "completion": [record["messages"][-1]], "label": label}, meta)


def _to_text(record: dict, meta: dict) -> dict:
    _need_one_answer(record, "text")
    turns = record["messages"]
    if len(turns) == 1:
        return {"text": turns[0]["content"]}
    return {"text": "\n\n".join(f"{m['role']}: {m['content']}" for m in turns)}


WRITERS: dict[str, Callable[[dict, dict], dict]] = {
    "alpaca": _to_alpaca, "sharegpt": _to_sharegpt, "messages": _to_messages, "trl": _to_trl,
    "trl_messages": _to_trl_messages, "hh_rlhf": _to_hh_rlhf, "completion": _to_completion, "kto": _to_kto,
    "text": _to_text,
}


def training_format(record: dict) -> str:
    """The format TRL trains on: chat ``messages`` for SFT, ``trl_messages`` for DPO."""
    return "trl_messages" if is_preference(record) else "messages"


def as_sft(record: dict, preference: str) -> list[dict]:
    """A preference pair as SFT records: the chosen answer, or ``both`` (labelled true and false, as KTO reads)."""
    if preference not in PREFERENCE_CHOICES:
        raise ValueError(f"unknown preference choice {preference!r}; use one of {', '.join(PREFERENCE_CHOICES)}")
    answers = [(record["chosen"], {})] if preference == "chosen" else \
        [(record["chosen"], {"label": True}), (record["rejected"], {"label": False})]
    return [make_record(record["messages"] + [answer], meta={**record.get("meta", {}), **label},
                        scores=record.get("scores"), lineage=record.get("lineage")) for answer, label in answers]


def _row(record: dict, fmt: str, *, with_meta: bool, with_id: bool, with_scores: bool, with_lineage: bool) -> dict:
    # once per output record: written for speed (a run's output is converted here record by record)
    if fmt == "auto":
        fmt = training_format(record)
    meta = record.get("meta")
    meta = dict(meta) if meta else {}
    for key in READER_META_KEYS:
        meta.pop(key, None)
    row = WRITERS[fmt](record, meta)
    meta.pop("alpaca", None)
    if with_id:
        row["id"] = record["id"]
    if with_meta and meta:
        for key, value in meta.items():
            row.setdefault(key, value)
    if with_scores and record.get("scores"):
        row["scores"] = record["scores"]
    if with_lineage and record.get("lineage"):
        row["lineage"] = record["lineage"]
    return row


def record_to_rows(record: dict, fmt: str, *, preference: str | None = None, with_meta: bool = True,
                   with_id: bool = False, with_scores: bool = False, with_lineage: bool = False) -> list[dict]:
    """The rows of ``fmt`` ('auto' = the TRL training format) for one record: two when a pair is written with
    ``preference='both'``. RecordError names the record (its source line) and why it does not fit."""
    if not isinstance(record, dict):
        raise TypeError(f"only records can be written, got {type(record).__name__} (a ReadReject is a row that could "
                        "not be read: set it aside)")
    try:
        if preference and is_preference(record):
            return [_row(r, fmt, with_meta=with_meta, with_id=with_id, with_scores=with_scores,
                         with_lineage=with_lineage) for r in as_sft(record, preference)]
        return [_row(record, fmt, with_meta=with_meta, with_id=with_id, with_scores=with_scores,
                     with_lineage=with_lineage)]
    except RecordError as err:
        where = record.get("meta", {}).get("source") or f"record {record.get('id')}"
        raise RecordError(f"{where}: {err}") from err


def record_to_row(record: dict, fmt: str, **options: Any) -> dict:
    """The one row of ``fmt`` for a record (see ``record_to_rows``)."""
    return record_to_rows(record, fmt, **options)[0]
