"""SemDeDup on Ray, cluster-then-local: embed on actors, k-means on the driver, dedup each cluster on the workers.

1. Embedding (the costly part) runs on an actor pool: each actor loads the embedder once and returns, per
   record, its position, id, embedding and (for ``keep: <score>``) that score.
2. The driver fits k-means and the embedding map's PCA on the first ``KMEANS_SAMPLE`` embeddings (all of them
   below that: then every decision is the local selector's). Beyond it, tasks assign each record to its
   nearest centroid and project it for the map.
3. One shuffle by cluster; each cluster is deduplicated by ``algorithms.semdedup.dedup_cluster``, the code the
   local selector runs, on the worker holding it. Only (position, nearest earlier record, similarity) per
   record reach the driver, which applies eps (or finds it for ``target_retention``) as the local selector does.
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dataflywheel.algorithms.semdedup import dedup_cluster, eps_for_retention, kmeans_labels
from dataflywheel.ops.base import Selection
from dataflywheel.ops.select.embedding_scan import check_present, map_2d, map_note, map_points, map_projection
from dataflywheel.ops.select.semantic_dedup import SemanticDedup, duplicates_selection
from dataflywheel.pipeline.ray_apply import RecordingCache, load_operator
from dataflywheel.pipeline.ray_dedup import collect_table, score_rows
from dataflywheel.pipeline.run import add_usage, usage_delta
from dataflywheel.records import loads, text_of

KMEANS_SAMPLE = 100_000
"""k-means and the map's PCA are fit on the first this many records' embeddings (about 150 MB at 384
dimensions); a larger set is assigned to the centroids by tasks."""

GROUP_SCHEMA = pa.schema([("position", pa.int64()), ("duplicate_of", pa.int64()), ("similarity", pa.float32()),
                          ("max_similarity", pa.float32()), ("nearest", pa.int64())])


class EmbedActor:
    """Embeds the records of each block with the operator's embedder (loaded once per actor)."""

    def __init__(self, token: str, blob: bytes, cache: str, fingerprint: str):
        self.op = load_operator(token, blob, cache, fingerprint)
        self.embedder = self.op.context.models.embedder(self.op.config.embedder)

    def __call__(self, table: pa.Table) -> pa.Table:
        cfg = self.op.config
        models = self.op.context.models
        before = models.usage()
        records = [loads(text) for text in table.column("record").to_pylist()]
        vectors = np.asarray(self.embedder.embed([text_of(r, cfg.field) for r in records]), dtype=np.float32)
        score = cfg.keep if cfg.keep not in ("farthest", "first") else None
        priority = [float(r.get("scores", {}).get(score, float("nan"))) for r in records] if score else \
            [float("nan")] * len(records)
        stats = {"usage": usage_delta(before, models.usage())}  # for the run's budget and books
        if isinstance(models.cache, RecordingCache):
            stats["cache"] = models.cache.drain()
        return pa.table({"position": table.column("position"), "id": pa.array([r["id"] for r in records]),
                         "embedding": _vectors(vectors), "priority": pa.array(priority, pa.float64()),
                         "stats": pa.array(([json.dumps(stats)] + [None] * (len(records) - 1)) if records else [],
                                           pa.string())})


def _vectors(vectors: np.ndarray) -> pa.Array:
    return pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), vectors.shape[1])


def _matrix(column) -> np.ndarray:
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    return array.flatten().to_numpy().reshape(len(array), -1).astype(np.float32, copy=False)


def _assign(table: pa.Table, centroids: np.ndarray, labels, mean: np.ndarray, axes: np.ndarray) -> pa.Table:
    """Each record's cluster (the fit's label when every record was in the fit, else the nearest centroid, as
    k-means assigns) and its point on the embedding map."""
    from sklearn.metrics import pairwise_distances_argmin

    embeddings = _matrix(table.column("embedding"))
    positions = table.column("position").to_numpy()
    cluster = np.asarray(labels)[positions] if labels is not None else pairwise_distances_argmin(embeddings, centroids)
    points = map_points(embeddings, mean, axes)
    table = table.select(["position", "embedding", "priority"])  # what the shuffle by cluster carries
    return table.append_column("label", pa.array(cluster.astype(np.int64))) \
        .append_column("x", pa.array(points[:, 0])).append_column("y", pa.array(points[:, 1]))


def _dedup_group(table: pa.Table, centroids: np.ndarray, eps: float, compare_with: str, keep: str) -> pa.Table:
    table = table.sort_by("position")  # the members in dataset order, as the local selector holds them
    members = table.column("position").to_numpy()
    embeddings = _matrix(table.column("embedding"))
    priority = None
    if keep == "first":
        priority = -members.astype(float)
    elif keep != "farthest":
        priority = np.nan_to_num(table.column("priority").to_numpy(), nan=-np.inf)
    label = int(table.column("label")[0].as_py())
    duplicate_of, similarity, max_similarity, nearest = dedup_cluster(members, embeddings, centroids[label], priority,
                                                                      eps, compare_with)
    return pa.table({"position": pa.array(members, pa.int64()), "duplicate_of": pa.array(duplicate_of, pa.int64()),
                     "similarity": pa.array(similarity, pa.float32()),
                     "max_similarity": pa.array(max_similarity, pa.float32()),
                     "nearest": pa.array(nearest, pa.int64())}, schema=GROUP_SCHEMA)


def _sample_rows(table: pa.Table, size: int) -> pa.Table:
    return table.filter(pc.less(table.column("position"), size))


def semantic_dedup(op: SemanticDedup, data, cpus: int, actors: dict) -> tuple[Selection, dict]:
    """select.semantic_dedup on the cluster (see the module doc); ``actors``: the engine's actor options
    (token, blob, cache, fingerprint, size, gpus) and ``spent(usage, cache_rows)``, told what the workers spent."""
    cfg = op.config
    if cfg.target_retention is not None and cfg.compare_with != "all":
        raise ValueError("select.semantic_dedup: target_retention needs compare_with: all")
    if cfg.keep not in ("farthest", "first"):  # fail before embedding when the score is not there
        scored = collect_table(data.map_batches(score_rows, fn_kwargs={"names": (cfg.keep,)}, batch_format="pyarrow",
                                                batch_size=None))
        check_present(op, {cfg.keep: scored.column("s0").to_numpy()})
    pool = _pool(actors)
    embedded = data.map_batches(EmbedActor, fn_constructor_kwargs={k: actors[k] for k in ("token", "blob", "cache",
                                                                                             "fingerprint")},
                                batch_size=None, batch_format="pyarrow", compute=pool, num_cpus=1,
                                num_gpus=actors.get("gpus") or None).materialize()
    books = collect_table(embedded.select_columns(["position", "id", "priority", "stats"])).sort_by("position")
    usage, cache_rows = {}, []
    for text in books.column("stats").drop_null().to_pylist():
        stats = json.loads(text)
        usage = add_usage(usage, stats["usage"])
        cache_rows.extend(tuple(row) for row in stats.get("cache", ()))
    actors["spent"](usage, cache_rows)  # the embedder's calls: charged to the run's budget, merged into its cache
    n = books.num_rows
    ids = books.column("id").to_pylist()
    sample = collect_table(embedded.map_batches(_sample_rows, fn_kwargs={"size": KMEANS_SAMPLE},
                                                batch_format="pyarrow", batch_size=None)).sort_by("position")
    fit = _matrix(sample.column("embedding"))
    labels, centroids = kmeans_labels(fit, cfg.n_clusters or max(1, n // 200), op.context.seed)
    whole = len(fit) == n
    mean, axes = map_projection(fit)
    assigned = embedded.map_batches(_assign, fn_kwargs={"centroids": centroids, "labels": labels if whole else None,
                                                        "mean": mean, "axes": axes},
                                    batch_format="pyarrow", batch_size=None)
    groups = assigned.groupby("label", num_partitions=max(1, cpus)).map_groups(
        _dedup_group, fn_kwargs={"centroids": centroids, "eps": cfg.eps, "compare_with": cfg.compare_with,
                                 "keep": cfg.keep}, batch_format="pyarrow")
    found = collect_table(groups).sort_by("position")
    eps = cfg.eps
    if cfg.target_retention is not None:
        eps = eps_for_retention(found.column("max_similarity").to_numpy(), found.column("nearest").to_numpy(),
                                cfg.target_retention)
        op.counters[f"eps chosen for retention {cfg.target_retention:g}: {eps:.4f}"] += 1
    if cfg.compare_with == "all":  # a record's fate depends on eps alone: decided here, as the local selector does
        max_similarity = found.column("max_similarity").to_numpy()
        nearest = found.column("nearest").to_numpy()
        dropped = max_similarity > 1 - eps
        duplicate_of, similarity = np.where(dropped, nearest, -1), np.where(dropped, max_similarity, 0)
    else:
        duplicate_of = found.column("duplicate_of").to_numpy()
        similarity = found.column("similarity").to_numpy()
    if whole:
        meta = map_2d(fit)
    else:
        points = collect_table(assigned.select_columns(["position", "x", "y"])).sort_by("position")
        columns = (points.column(c).to_pylist() for c in ("position", "x", "y"))
        meta = {int(p): map_note(x, y) for p, x, y in zip(*columns)}
    selection = duplicates_selection(ids, duplicate_of, similarity, eps, meta)
    how = {"runs_on": "actors (embedding), driver (k-means), shuffle by cluster", "shuffles": 1,
           "shuffled_rows": n, "clusters": len(centroids), "kmeans_fit_on": len(fit)}
    return selection, how


def _pool(actors: dict):
    import ray

    return ray.data.ActorPoolStrategy(size=actors["size"], max_tasks_in_flight_per_actor=1)
