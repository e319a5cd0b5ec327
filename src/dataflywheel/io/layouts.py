"""Trainer layouts: a dataset written where LLaMA-Factory or Axolotl reads it, with the entry that names it.

- ``llamafactory``: ``DIR/NAME.jsonl`` in LLaMA-Factory's ShareGPT format and the ``NAME`` entry of
  ``DIR/dataset_info.json`` (other entries kept): SFT (with system prompts and tools), preference pairs
  (``ranking: true``) or KTO (``kto_tag``). Train with ``dataset_dir: DIR`` and ``dataset: NAME``.
- ``axolotl``: ``DIR/NAME.jsonl`` in OpenAI messages (pairs: ``messages`` + ``chosen``/``rejected`` turns) and
  ``DIR/axolotl.yaml``, the ``datasets:`` section (``type: chat_template``, or ``chat_template.default`` with
  ``rl: dpo``) to merge into an Axolotl config.

A dataset holds one kind of record: the first record decides, and a record of another kind stops the
write naming it (nothing is left behind).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Iterator

import yaml

from dataflywheel.io.files import replacing, write_rows
from dataflywheel.io.writers import as_sft, record_to_rows
from dataflywheel.records import RecordError, is_preference, is_prompt_only

LAYOUTS = ("llamafactory", "axolotl")


def _kind(record: dict) -> str:
    if is_preference(record):
        return "preference"
    if is_prompt_only(record):
        raise RecordError("a prompt-only record has no answer to train on: answer it first, or drop it")
    return "kto" if isinstance(record["meta"].get("label"), bool) else "sft"


def _where(record: dict) -> str:
    return record["meta"].get("source") or f"record {record['id']}"


_ASKS, _ANSWERS = ("human", "observation"), ("gpt", "function_call")


def _check_llamafactory(row: dict, kind: str) -> None:
    """LLaMA-Factory skips, with a warning, conversations whose turns do not alternate a user or tool turn with
    an assistant turn or call, or that do not end where their kind must: refuse them here instead."""
    tags = [turn["from"] for turn in row["conversations"]]
    for i, tag in enumerate(tags):
        if tag not in (_ASKS, _ANSWERS)[i % 2]:
            raise RecordError(f"LLaMA-Factory needs turns that alternate user/observation and assistant/function_call; "
                              f"turn {i} is {tag!r}: write 'sharegpt' or 'messages' for another trainer")
    if len(tags) % 2 != (1 if kind == "preference" else 0):
        raise RecordError(f"LLaMA-Factory needs {'an odd' if kind == 'preference' else 'an even'} number of turns in "
                          f"a {kind} record; this one has {len(tags)}")


class _Rows:
    """The rows of one kind of record; notes the kind and the optional columns seen."""

    def __init__(self, records: Iterable[dict], layout: str, preference: str | None):
        self.records, self.layout, self.preference = records, layout, preference
        self.kind: str | None = None
        self.columns: set[str] = set()
        self.count = 0

    def _one_kind(self, records: Iterable[dict]) -> Iterator[dict]:
        for record in records:
            for item in as_sft(record, self.preference) if self.preference and is_preference(record) else [record]:
                try:
                    kind = _kind(item)
                except RecordError as err:
                    raise RecordError(f"{_where(record)}: {err}") from err
                if self.kind is None:
                    self.kind = kind
                elif kind != self.kind:
                    raise RecordError(f"{_where(record)}: a {kind} record in a dataset of {self.kind} records (the "
                                      "first record decides): a trainer's dataset holds one kind; split the data, "
                                      "or turn pairs into SFT records with --preference chosen")
                yield item
            self.count += 1

    def __iter__(self) -> Iterator[dict]:
        fmt = "sharegpt" if self.layout == "llamafactory" else "auto"
        for record in self._one_kind(self.records):
            if self.layout == "axolotl" and self.kind == "kto":
                raise RecordError(f"{_where(record)}: the Axolotl layout writes SFT and DPO data; write KTO records "
                                  "with --to kto (TRL) or --to llamafactory")
            [row] = record_to_rows(record, fmt, with_meta=False)
            if self.kind == "kto":
                row["label"] = record["meta"]["label"]
            if self.layout == "llamafactory":
                try:
                    _check_llamafactory(row, self.kind)
                except RecordError as err:
                    raise RecordError(f"{_where(record)}: {err}") from err
                if not isinstance(row.get("tools", ""), str):  # LLaMA-Factory reads tools as JSON text
                    row["tools"] = json.dumps(row["tools"], ensure_ascii=False)
            if self.layout == "axolotl" and self.kind == "preference":
                row = {"messages": row["prompt"], "chosen": row["chosen"][0], "rejected": row["rejected"][0],
                       **({"tools": row["tools"]} if "tools" in row else {})}
            self.columns.update(k for k in ("system", "tools") if k in row)
            yield row


def _llamafactory_entry(file_name: str, rows: _Rows) -> dict:
    columns = {"messages": "conversations", **{k: k for k in sorted(rows.columns)}}
    entry: dict = {"file_name": file_name, "formatting": "sharegpt"}
    if rows.kind == "preference":
        entry["ranking"] = True
        columns.update(chosen="chosen", rejected="rejected")
    if rows.kind == "kto":
        columns["kto_tag"] = "label"
    entry["columns"] = columns
    return entry


def _axolotl_config(path: Path, rows: _Rows) -> str:
    dataset: dict = {"path": str(path.resolve()), "ds_type": "json"}
    if rows.kind == "preference":
        dataset.update(type="chat_template.default", field_messages="messages", field_chosen="chosen",
                       field_rejected="rejected")
    else:
        dataset.update(type="chat_template", field_messages="messages", roles_to_train=["assistant"])
    if "tools" in rows.columns:
        dataset["field_tools"] = "tools"
    config = ({"rl": "dpo"} if rows.kind == "preference" else {}) | {"datasets": [dataset]}
    head = (f"# Written by dataflywheel: {rows.count} {rows.kind} records. Merge into your Axolotl config\n"
            "# (base_model, chat_template, adapter, ... are yours to set).\n")
    return head + yaml.safe_dump(config, sort_keys=False)


def _dataset_info(path: Path) -> dict:
    if not path.exists():
        return {}
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err.msg} at line {err.lineno}); fix or move it first") from err
    if not isinstance(entries, dict):
        raise ValueError(f"{path} must hold an object of dataset entries")
    return entries


def write_layout(records: Iterable[dict], directory: str | Path, layout: str, name: str, *,
                 preference: str | None = None) -> dict:
    """Write ``records`` as a ``layout`` dataset called ``name`` in ``directory``; return what was written."""
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; use one of {', '.join(LAYOUTS)}")
    directory = Path(directory)
    config = directory / ("dataset_info.json" if layout == "llamafactory" else "axolotl.yaml")
    entries = _dataset_info(config) if layout == "llamafactory" else {}
    data = directory / f"{name}.jsonl"
    rows = _Rows(records, layout, preference)
    write_rows(rows, data, "jsonl")
    if rows.kind is None:
        data.unlink()
        raise RecordError("no records to write")
    if layout == "llamafactory":
        entries[name] = _llamafactory_entry(data.name, rows)
        text = json.dumps(entries, ensure_ascii=False, indent=2) + "\n"
    else:
        text = _axolotl_config(data, rows)
    with replacing(config) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return {"data": str(data), "config": str(config), "kind": rows.kind, "records": rows.count}
