"""Exact and MinHash dedup and top-k on Ray Data: the same decisions as the local selectors, computed on the cluster.

Rows are spread over ``parts`` hash partitions of their key (``part`` column) and each partition is grouped
in one vectorised call (``groupby("part").map_groups``), never one Python call per key.

* exact dedup: key = hash of the normalised text; one shuffle; the first record (by position) of each key stays.
* MinHash: each record emits one row per band (band, bucket key, signature); one shuffle by bucket; in each
  bucket every member is verified against the first and a member that fails against every other member (as
  ``algorithms/minhash.py`` does), giving the verified edges; connected components by min-label propagation
  over the edge list (``ray_components``); one last shuffle by component decides who stays.
* top-k: tasks reduce each record to its position, id and scores; only those reach the driver, which ranks them.
* SemDeDup: cluster-then-local, in ``ray_semdedup``.
"""

from __future__ import annotations

import hashlib
import math

import numpy as np
import pyarrow as pa

from dataflywheel.algorithms.minhash import band_keys, estimated_jaccard, optimal_bands
from dataflywheel.ops.base import Selection
from dataflywheel.ops.select.budget_selectors import TopK
from dataflywheel.ops.select.embedding_scan import Gathered, check_present, score_values
from dataflywheel.ops.select.exact_dedup import ExactDedup
from dataflywheel.ops.select.minhash_dedup import MinHashDedup, sign_batch
from dataflywheel.ops.select.score_check import check_scores
from dataflywheel.pipeline.ray_components import connected_components
from dataflywheel.records import loads, text_of
from dataflywheel.text import dedup_key

ROWS_PER_PART = 200_000
"""Rows one ``map_groups`` call holds at most (about; more partitions for more rows)."""


def distributed_selection(op, data, cpus: int, actors=None) -> tuple[Selection, dict] | None:
    """The selection of ``op`` computed on the cluster and how (shuffles, rows moved), or None when ``op`` has
    no distributed form. ``actors()``: how the engine runs model-backed work (see ``ray_semdedup``)."""
    from dataflywheel.ops.select.semantic_dedup import SemanticDedup

    if type(op) is SemanticDedup and actors is not None:
        from dataflywheel.pipeline.ray_semdedup import semantic_dedup

        return semantic_dedup(op, data, cpus, actors())
    if type(op) is ExactDedup:
        return exact_dedup(op, data, cpus)
    if type(op) is MinHashDedup and op.config.verify != "exact":
        return minhash_dedup(op, data, cpus)
    if type(op) is TopK:
        return top_k(op, data)
    return None


def partitions(rows: int, cpus: int) -> int:
    return max(cpus, math.ceil(rows / ROWS_PER_PART))


def _collect(data) -> list[dict]:
    return [row for table in data.iter_batches(batch_size=None, batch_format="pyarrow") for row in table.to_pylist()]


def collect_table(data) -> pa.Table:
    """A Ray dataset's rows on the driver, as one Arrow table."""
    return pa.concat_tables(list(data.iter_batches(batch_size=None, batch_format="pyarrow")))


# ---- exact dedup ---------------------------------------------------------------------------------

EXACT_SCHEMA = pa.schema([("position", pa.int64()), ("kept", pa.string())])


def _exact_keys(table: pa.Table, field: str, parts: int) -> pa.Table:
    records = [loads(text) for text in table.column("record").to_pylist()]
    digests = [hashlib.blake2b(dedup_key(text_of(r, field)).encode(), digest_size=16).digest() for r in records]
    return pa.table({"key": pa.array(digests, pa.binary(16)), "position": table.column("position"),
                     "id": [r["id"] for r in records],
                     "part": pa.array([int.from_bytes(d[:8], "little") % parts for d in digests], pa.int64())})


def _exact_part(table: pa.Table) -> pa.Table:
    """The later records of each key in one partition, each with the id of the key's first record."""
    keys = np.array(table.column("key").to_pylist(), dtype=object)
    positions = table.column("position").to_numpy()
    ids = table.column("id").to_pylist()
    order = sorted(range(len(keys)), key=lambda i: (keys[i], positions[i]))
    out_positions, kept = [], []
    first = None
    for n, i in enumerate(order):
        if n and keys[i] == keys[order[n - 1]]:
            out_positions.append(int(positions[i]))
            kept.append(ids[first])
        else:
            first = i
    return pa.table({"position": pa.array(out_positions, pa.int64()), "kept": pa.array(kept, pa.string())},
                    schema=EXACT_SCHEMA)


def exact_dedup(op: ExactDedup, data, cpus: int) -> Selection:
    field = op.config.field
    parts = partitions(data.count(), cpus)
    keyed = data.map_batches(_exact_keys, fn_kwargs={"field": field, "parts": parts}, batch_format="pyarrow",
                             batch_size=None)
    duplicates = keyed.groupby("part", num_partitions=cpus).map_groups(_exact_part, batch_format="pyarrow")
    selection = Selection()
    for row in _collect(duplicates):
        selection.rejected[row["position"]] = f"exact duplicate of {row['kept']} ({field})"
        selection.meta[row["position"]] = {"duplicate_of": row["kept"]}
    return selection, {"runs_on": "shuffle", "shuffles": 1, "shuffled_rows": data.count()}


# ---- top-k ---------------------------------------------------------------------------------------

def score_rows(table: pa.Table, names: tuple[str, ...]) -> pa.Table:
    """Position, id and the named scores and flags of each record (NaN where absent): all the ranking needs."""
    records = [loads(text) for text in table.column("record").to_pylist()]
    columns = {"position": table.column("position"), "id": pa.array([r["id"] for r in records], pa.string())}
    for n, values in enumerate(score_values(records, names).values()):
        columns[f"s{n}"] = pa.array(values, pa.float64())
    return pa.table(columns)


def top_k(op: TopK, data) -> tuple[Selection, dict]:
    """select.top_k: tasks parse the records and keep their scores; the driver ranks those numbers (position, id
    and 8 bytes a score: about 40 bytes a record, 400 MB for 10 million) exactly as the local selector."""
    scores, flags = tuple(op.config.scores), op.flag_names()
    names = scores + flags
    table = collect_table(data.map_batches(score_rows, fn_kwargs={"names": names}, batch_format="pyarrow",
                                           batch_size=None)).sort_by("position")
    values = {name: table.column(f"s{n}").to_numpy() for n, name in enumerate(names)}
    found = Gathered(table.column("id").to_pylist(), None, {k: values[k] for k in scores},
                     {k: values[k] for k in flags})
    check_present(op, found.scores)
    return op.choose(found), {"runs_on": "tasks, ranked on the driver", "rows_to_driver": table.num_rows,
                              "bytes_to_driver": table.nbytes}


# ---- MinHash -------------------------------------------------------------------------------------

EDGE_SCHEMA = pa.schema([("u", pa.int64()), ("v", pa.int64()), ("sim", pa.float64()), ("id_u", pa.string()),
                         ("id_v", pa.string()), ("rank_u", pa.float64()), ("rank_v", pa.float64())])


def _band_rows(table: pa.Table, cfg, bands: int, rows: int, parts: int) -> pa.Table:
    """One row per record and band: the bucket key, the record's position, id, rank and whole signature."""
    records = [loads(text) for text in table.column("record").to_pylist()]
    sigs, _ = sign_batch(([text_of(r, cfg.field) for r in records], cfg))
    keys = band_keys(sigs, bands, rows)  # [n, bands]
    n = len(records)
    rank = np.zeros(n) if cfg.keep == "first" else \
        np.array([float(r.get("scores", {}).get(cfg.keep, float("-inf"))) for r in records])
    index = np.repeat(np.arange(n), bands)
    flat_keys = keys.ravel()
    width = sigs.shape[1] * 4
    sig_bytes = np.ascontiguousarray(sigs).view(np.uint8).reshape(n, width)[index]
    ids = np.array([r["id"] for r in records], dtype=object)
    return pa.table({
        "band": pa.array(np.tile(np.arange(bands), n), pa.int32()),
        "key": pa.array(flat_keys, pa.uint64()),
        "position": pa.array(table.column("position").to_numpy()[index], pa.int64()),
        "id": pa.array(ids[index], pa.string()),
        "rank": pa.array(rank[index], pa.float64()),
        "sig": pa.FixedSizeBinaryArray.from_buffers(pa.binary(width), len(index), [None, pa.py_buffer(sig_bytes)]),
        "part": pa.array((flat_keys % np.uint64(parts)).astype(np.int64), pa.int64()),
    })


def _verify_part(table: pa.Table, threshold: float, check: bool, num_perm: int) -> pa.Table:
    """Verified edges of the buckets in one partition: each member against the bucket's first member; a member
    that fails, against every other member of its bucket (``algorithms/minhash.verified_links`` per bucket)."""
    m = table.num_rows
    band, key = table.column("band").to_numpy(), table.column("key").to_numpy()
    position = table.column("position").to_numpy()
    order = np.lexsort((position, key, band))
    band, key, position = band[order], key[order], position[order]
    ids = np.array(table.column("id").to_pylist(), dtype=object)[order]
    rank = table.column("rank").to_numpy()[order]
    raw = np.frombuffer(table.column("sig").combine_chunks().buffers()[1], dtype=np.uint32)
    sigs = raw[:m * num_perm].reshape(m, num_perm)[order] if m else np.zeros((0, num_perm), np.uint32)
    new = np.ones(m, dtype=bool)
    new[1:] = (band[1:] != band[:-1]) | (key[1:] != key[:-1])
    starts = np.flatnonzero(new)
    sizes = np.diff(np.append(starts, m))
    start_of, size_of = np.repeat(starts, sizes), np.repeat(sizes, sizes)
    members = np.flatnonzero(np.arange(m) != start_of)
    heads = start_of[members]
    similar = estimated_jaccard(sigs, members, heads) if check else np.ones(len(members))
    failed = members[similar < threshold]
    counts = size_of[failed] - 1
    offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    others = np.repeat(start_of[failed], counts) + 1 + offsets
    mine = np.repeat(failed, counts)
    mine, others = mine[others != mine], others[others != mine]
    left, right = np.concatenate([members, mine]), np.concatenate([heads, others])
    sims = np.concatenate([similar, estimated_jaccard(sigs, mine, others)])
    keep = sims >= threshold
    left, right, sims = left[keep], right[keep], sims[keep]
    return pa.table({"u": position[left], "v": position[right], "sim": sims, "id_u": ids[left].tolist(),
                     "id_v": ids[right].tolist(), "rank_u": rank[left], "rank_v": rank[right]}, schema=EDGE_SCHEMA)


def minhash_dedup(op: MinHashDedup, data, cpus: int) -> Selection:
    cfg = op.config
    bands, rows = optimal_bands(cfg.threshold, cfg.num_perm, 1 - cfg.fn_weight, cfg.fn_weight)
    n = data.count()
    if cfg.keep != "first":
        present = data.map_batches(_finite_scores, fn_kwargs={"name": cfg.keep}, batch_format="pyarrow",
                                   batch_size=None).sum("finite")
        check_scores(op, cfg.keep, int(present or 0), n)
    parts = partitions(n * bands, cpus)
    keyed = data.map_batches(_band_rows, fn_kwargs={"cfg": cfg, "bands": bands, "rows": rows, "parts": parts},
                             batch_format="pyarrow", batch_size=None)
    edges = keyed.groupby("part", num_partitions=cpus).map_groups(
        _verify_part, fn_kwargs={"threshold": cfg.threshold, "check": cfg.verify == "signature",
                                 "num_perm": cfg.num_perm}, batch_format="pyarrow").materialize()
    selection = Selection()
    how = {"runs_on": "shuffle", "shuffles": 1, "shuffled_rows": n * bands, "bands": bands, "rows": rows,
           "edges": edges.count(), "label_rounds": 0}
    if edges.count() == 0:
        return selection, how
    clusters = connected_components(edges, cpus, partitions(edges.count() * 2, cpus))
    how.update(label_rounds=clusters.iterations, shuffles=3 + clusters.iterations,
               shuffled_rows=n * bands + 2 * edges.count() + clusters.moved + clusters.nodes)
    for row in _collect(clusters.members):
        position, kept, size, link = row["node"], row["kept"], row["size"], row["link"]
        note = {"minhash_cluster": kept, "minhash_cluster_size": size}
        if not row["keeper"]:
            note["duplicate_of"] = kept
            selection.rejected[position] = (f"near duplicate of {kept} (MinHash cluster of {size}, linked at "
                                            f"Jaccard {link:.2f})")
        selection.meta[position] = note
    return selection, how


def _finite_scores(table: pa.Table, name: str) -> pa.Table:
    values = [loads(t).get("scores", {}).get(name) for t in table.column("record").to_pylist()]
    return pa.table({"finite": [int(v is not None and math.isfinite(float(v))) for v in values]})
