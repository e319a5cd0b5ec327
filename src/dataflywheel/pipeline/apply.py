"""Apply one operator to one batch: the pure part of execution, shared by every engine.

Nothing here touches files. Each function returns ``Item``s in output order; an engine turns them into
checkpoint and reject rows. A record-level failure (an operator raising on some records, an invalid
record) becomes a rejected item with the reason; a ``FatalError`` (auth, server down, budget) is never
caught here: no record is at fault, so the run stops.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

from dataflywheel.errors import FatalError
from dataflywheel.ops.base import Candidate, Filter, Generator, Mapper, Operator, Rejected, Scorer, Selection
from dataflywheel.ops.isolate import each_alone_on_failure
from dataflywheel.records import RecordError, dumps, record_id, validate_record


@dataclass
class Item:
    """One outcome: a record kept (``reason`` None) or rejected; ``position`` indexes the input batch
    (None for a generated record); ``error`` marks a failure of the operator rather than a decision."""

    record: dict | None
    position: int | None
    reason: str | None = None
    raw: str = ""
    error: bool = False


class StepFailed(FatalError):
    """Every record of several batches in a row failed the same way: a broken operator or setup, not bad data."""


def _error_reason(op: Operator, err: BaseException) -> str:
    return f"error in {op.name}: {type(err).__name__}: {err}"


def apply_filter(op: Filter, batch: list[dict]) -> list[Item]:
    items = []
    for i, (record, reason) in enumerate(zip(batch, each_alone_on_failure(op.reject_reasons, batch))):
        if isinstance(reason, Exception):
            items.append(Item(record, i, _error_reason(op, reason), error=True))
        else:
            items.append(Item(record, i, reason))
    return items


def with_mapper_lineage(before: dict, after: dict, op: Operator, step: str, details: dict | None = None) -> dict:
    """``after`` validated, with its new id and a lineage entry naming ``before`` when the text changed
    (``details``: what the operator says about the change, e.g. the original text and the judge's scores)."""
    after = {**after, "id": before["id"]}
    validate_record({k: v for k, v in after.items() if k != "id"})
    new_id = record_id(after)
    if new_id == before["id"]:
        return after
    entry = {"op": op.name, "step": step, "kind": "mapper", "parents": [before["id"]]}
    if op.model_roles:
        entry["models"] = op.model_roles
    entry.update(details or {})
    return {**after, "id": new_id, "lineage": list(after.get("lineage", [])) + [entry]}


def apply_mapper(op: Mapper, step: str, batch: list[dict]) -> list[Item]:
    """A mapper's results: a record (changed or not), a ``Candidate`` (the changed record with details for its
    lineage entry) or a ``Rejected`` (the input record is rejected with that reason)."""
    items = []
    for i, (record, mapped) in enumerate(zip(batch, each_alone_on_failure(op.map_batch, batch))):
        if isinstance(mapped, Exception):
            items.append(Item(record, i, _error_reason(op, mapped), error=True))
            continue
        if isinstance(mapped, Rejected):
            items.append(Item(mapped.record if mapped.record is not None else record, i, mapped.reason))
            continue
        details = None
        if isinstance(mapped, Candidate):
            mapped, details = mapped.record, mapped.details
        if mapped is record:
            items.append(Item(record, i))
            continue
        try:
            items.append(Item(with_mapper_lineage(record, mapped, op, step, details), i))
        except RecordError as err:
            items.append(Item(record, i, f"{op.name} produced an invalid record: {err}", raw=_raw(mapped)))
    return items


def apply_scorer(op: Scorer, batch: list[dict]) -> list[Item]:
    items = []
    for i, (record, value) in enumerate(zip(batch, each_alone_on_failure(op.score_batch, batch))):
        if isinstance(value, Exception):
            items.append(Item(record, i, _error_reason(op, value), error=True))
            continue
        named = value if isinstance(value, dict) else {op.score_name: value}
        try:
            named = {k: float("nan") if v is None else float(v) for k, v in named.items()}
        except (TypeError, ValueError) as err:
            items.append(Item(record, i, f"{op.name} returned a score that is not a number: {err}", error=True))
            continue
        items.append(Item({**record, "scores": {**record["scores"], **named}}, i))
    return items


def _raw(value: Any) -> str:
    try:
        return dumps(value)[:100_000]
    except (TypeError, ValueError):
        return repr(value)[:100_000]


def stamp(op: Operator, step: str, proposal: dict | Candidate, round_: int | None = None) -> dict:
    """A generated record: validated, with its id and the lineage entry of this step (op, step, parents,
    model roles, parameters, round). Raises RecordError when the candidate is not a valid record."""
    candidate = proposal if isinstance(proposal, Candidate) else Candidate(proposal)
    if not isinstance(candidate.record, dict):
        raise RecordError(f"a generated record must be an object, got {type(candidate.record).__name__}")
    record = {k: v for k, v in candidate.record.items() if k != "id"}
    record.setdefault("meta", {})
    record.setdefault("scores", {})
    entry: dict[str, Any] = {"op": op.name, "step": step, "kind": "generator", "parents": list(candidate.parents)}
    if op.model_roles:
        entry["models"] = op.model_roles
    entry["params"] = op.config.model_dump(mode="json")
    if round_ is not None:
        entry["round"] = round_
    entry.update(candidate.details)
    record["lineage"] = list(record.get("lineage") or []) + [entry]
    validate_record(record)
    record["id"] = record_id(record)
    return record


def generated_items(op: Operator, step: str, proposals: Iterable, round_: int | None = None) -> list[Item]:
    """Proposals as items: stamped records (kept for now), or rejects with the reason and raw text."""
    items = []
    for proposal in proposals:
        if isinstance(proposal, Rejected):
            record = None
            if proposal.record is not None:
                try:
                    record = stamp(op, step, Candidate(proposal.record, proposal.parents), round_)
                except RecordError:
                    record = None
            items.append(Item(record, None, proposal.reason, raw=proposal.raw or (_raw(proposal.record)
                                                                                  if record is None and proposal.record else "")))
            continue
        try:
            items.append(Item(stamp(op, step, proposal, round_), None))
        except RecordError as err:
            body = proposal.record if isinstance(proposal, Candidate) else proposal
            items.append(Item(None, None, f"{op.name} generated an invalid record: {err}", raw=_raw(body)))
    return items


def passed_inputs(op: Operator, step: str, batch: list[dict]) -> list[Item]:
    """A generator step's input records: passed on, or rejected as replaced (``keep_inputs: false``)."""
    if getattr(op.config, "keep_inputs", True):
        return [Item(r, i) for i, r in enumerate(batch)]
    return [Item(r, i, f"replaced by generated records (step {step}: keep_inputs false)") for i, r in enumerate(batch)]


def apply_generator(op: Generator, step: str, batch: list[dict]) -> list[Item]:
    """The inputs (kept or replaced, as configured), then what the generator made from the batch.

    A generator that raises on the batch is run again on each record alone (paid model answers come from
    the cache), so only the records it fails on lose their proposals: one error item names each."""
    items = passed_inputs(op, step, batch)
    try:
        proposals = list(op.generate(batch))
    except FatalError:
        raise
    except Exception:  # noqa: BLE001 - tried again record by record below; each failing record keeps its reason
        proposals = []
        for record in batch:
            try:
                proposals.extend(list(op.generate([record])))
            except FatalError:
                raise
            except Exception as err:  # noqa: BLE001
                items.append(Item(None, None, f"{_error_reason(op, err)} (on record {record['id']})", error=True))
    return items + generated_items(op, step, proposals)


def apply_batch(op: Operator, step: str, batch: list[dict]) -> list[Item]:
    """What ``op`` does to one batch, by kind (filters, mappers, scorers, per-batch generators)."""
    if isinstance(op, Filter):
        return apply_filter(op, batch)
    if isinstance(op, Mapper):
        return apply_mapper(op, step, batch)
    if isinstance(op, Scorer):
        return apply_scorer(op, batch)
    if isinstance(op, Generator):
        return apply_generator(op, step, batch)
    raise TypeError(f"step {step}: {type(op).__name__} does not work batch by batch")


def apply_selection(selection: Selection, batch: list[dict], offset: int) -> list[Item]:
    """A selector's decisions for one batch of the stream it decided over (``offset``: first position)."""
    items = []
    for i, record in enumerate(batch):
        position = offset + i
        note, scores = selection.meta.get(position), selection.scores.get(position)
        if note:
            record = {**record, "meta": {**record["meta"], **note}}
        if scores:
            record = {**record, "scores": {**record["scores"], **scores}}
        items.append(Item(record, i, selection.rejected.get(position)))
    return items
