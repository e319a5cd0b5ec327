"""One round of a pool generator, screened: what every engine does between ``propose`` and accepting.

Order of the checks, cheapest decisive one first: the operator's proposals become stamped items (unparsable
ones are already rejects), exact copies of the pool or of anything accepted are rejected by id, the operator's
own ``verify`` runs on the rest (ROUGE-L novelty, a judge), then near duplicates (MinHash) of the pool, of
everything accepted and of the round's earlier survivors, and last the target: what is over it is rejected as
such. Every candidate ends accepted or with its reason.
"""

from __future__ import annotations

from typing import Callable, Iterator

from dataflywheel.algorithms.minhash import NearDuplicateIndex
from dataflywheel.errors import FatalError
from dataflywheel.ops.base import Operator, PoolGenerator, PoolView
from dataflywheel.pipeline.apply import Item, generated_items
from dataflywheel.records import text_of


class PoolNovelty:
    """What a generator's candidates must differ from: the ids (exact copies) and, when configured, the
    texts (near duplicates) of the pool and of every accepted record. ``op.config`` is a ``NoveltyConfig``."""

    def __init__(self, op: Operator, scan: Callable[[], Iterator[list[dict]]], accepted: list[dict]):
        cfg = op.config
        self.field = cfg.dedup_text
        self.near = NearDuplicateIndex(cfg.near_duplicate) if cfg.near_duplicate is not None else None
        self.known: set[str] = set()
        for batch in scan():
            self._index(batch)
        self._index(accepted)

    def _index(self, records: list[dict]) -> None:
        self.known.update(r["id"] for r in records)
        if self.near is not None:
            self.near.add([text_of(r, self.field) for r in records], [r["id"] for r in records])

    def exact(self, items: list[Item]) -> None:
        """Reject items whose record is the pool's, an accepted one or an earlier item's of the round."""
        for item in items:
            if item.reason is None:
                if item.record["id"] in self.known:
                    item.reason = "exact duplicate of a record in the pool or already accepted"
                self.known.add(item.record["id"])

    def near_duplicates(self, items: list[Item]) -> None:
        """Reject items too similar to the pool, to anything accepted or to an earlier survivor of the round;
        the survivors are indexed."""
        fresh = [i for i in items if i.reason is None]
        if self.near is None or not fresh:
            return
        matches = self.near.screen([text_of(i.record, self.field) for i in fresh], [i.record["id"] for i in fresh])
        for item, match in zip(fresh, matches):
            if match is not None:
                similarity, other = match
                item.reason = (f"near duplicate of {other} (MinHash Jaccard {similarity:.2f} >= "
                               f"{self.near.threshold} on the {self.field})")


def screen_round(op: PoolGenerator, step: str, view: PoolView, novelty: PoolNovelty) -> list[Item]:
    """Propose, verify and screen one round. A round that raises is proposed once more (the answers it paid
    for come from the call cache: only failed requests are sent again); failing twice, it is one error item
    (the next round may succeed)."""
    for attempt in range(2):
        try:
            proposals = list(op.propose(view))
            break
        except FatalError:
            raise
        except Exception as err:  # noqa: BLE001 - a failed round is an error row; the next round may succeed
            if attempt:
                return [Item(None, None, f"error in {op.name} (round {view.round}, proposed twice): "
                                         f"{type(err).__name__}: {err}", error=True)]
            op.counters["rounds proposed again after an error"] += 1
    items = generated_items(op, step, proposals, view.round)
    novelty.exact(items)
    candidates = [i for i in items if i.reason is None]
    try:
        reasons = op.verify([i.record for i in candidates], view)
    except FatalError:
        raise
    except Exception as err:  # noqa: BLE001 - every candidate of the round is rejected with the cause
        reasons = [f"verification failed: {type(err).__name__}: {err}"] * len(candidates)
    for item, reason in zip(candidates, reasons, strict=True):
        item.reason = reason
    novelty.near_duplicates(candidates)
    room = view.wanted
    for item in candidates:
        if item.reason is None:
            if room <= 0:
                item.reason = f"target of {view.target} already reached"
            room -= 1
    return items


def screen_outputs(items: list[Item], novelty: PoolNovelty) -> None:
    """A per-batch generator's batch: its generated records (not the inputs it passes on) screened for exact
    and near duplicates of what the step generated before."""
    made = [i for i in items if i.position is None and i.record is not None and i.reason is None]
    novelty.exact(made)
    novelty.near_duplicates(made)
