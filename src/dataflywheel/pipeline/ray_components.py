"""Connected components of an edge list on Ray Data, by min-label propagation; then each component's keeper.

Every node starts labelled with itself (its record position). In each round the nodes whose label changed
send it to their neighbours (one shuffle by node, grouped per hash partition), and every node takes the
smallest label it has seen; the rounds stop when no label changes (as many rounds as the widest component's
radius from its smallest node, plus one). No step gathers the graph on one machine.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

STATE_SCHEMA = pa.schema([("node", pa.int64()), ("label", pa.int64()), ("nbrs", pa.list_(pa.int64())),
                          ("id", pa.string()), ("rank", pa.float64()), ("link", pa.float64()),
                          ("changed", pa.int64())])
MESSAGE_SCHEMA = pa.schema([("node", pa.int64()), ("label", pa.int64()), ("part", pa.int64())])
MEMBER_SCHEMA = pa.schema([("node", pa.int64()), ("kept", pa.string()), ("size", pa.int64()),
                           ("link", pa.float64()), ("keeper", pa.bool_())])


@dataclass
class Components:
    members: object  # a dataset of MEMBER_SCHEMA rows: every node of the graph, its component's keeper
    iterations: int
    nodes: int
    moved: int  # state rows and messages shuffled by the label rounds


def _half_edges(table: pa.Table, parts: int) -> pa.Table:
    """Each edge from both ends: (node, neighbour, similarity, the node's id and rank)."""
    u, v = table.column("u").to_numpy(), table.column("v").to_numpy()
    node = np.concatenate([u, v])
    return pa.table({"node": node, "nbr": np.concatenate([v, u]),
                     "sim": np.concatenate([table.column("sim").to_numpy()] * 2),
                     "id": pa.concat_arrays([table.column(c).combine_chunks() for c in ("id_u", "id_v")]),
                     "rank": np.concatenate([table.column("rank_u").to_numpy(), table.column("rank_v").to_numpy()]),
                     "part": node % parts})


def _groups(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(order, starts, sizes): rows sorted by key, where each key's run starts and how long it is."""
    order = np.argsort(keys, kind="stable")
    ordered = keys[order]
    new = np.ones(len(keys), dtype=bool)
    new[1:] = ordered[1:] != ordered[:-1]
    starts = np.flatnonzero(new)
    return order, starts, np.diff(np.append(starts, len(keys)))


def _initial_state(table: pa.Table) -> pa.Table:
    """One state row per node: its distinct neighbours, best link, id and rank; labelled with itself."""
    node, nbr, sim = table.column("node").to_numpy(), table.column("nbr").to_numpy(), table.column("sim").to_numpy()
    ids, rank = table.column("id").to_pylist(), table.column("rank").to_numpy()
    order, starts, sizes = _groups(node)
    nbrs, links = [], []
    for start, size in zip(starts.tolist(), sizes.tolist()):
        rows = order[start:start + size]
        nbrs.append(np.unique(nbr[rows]).tolist())
        links.append(float(sim[rows].max()))
    first = order[starts]
    nodes = node[first]
    return pa.table({"node": nodes, "label": nodes, "nbrs": pa.array(nbrs, pa.list_(pa.int64())),
                     "id": [ids[i] for i in first.tolist()], "rank": rank[first], "link": np.array(links),
                     "changed": np.ones(len(nodes), dtype=np.int64)}, schema=STATE_SCHEMA)


def _with_part(table: pa.Table, column: str, parts: int) -> pa.Table:
    return table.append_column("part", pa.array(table.column(column).to_numpy() % parts, pa.int64()))


def _messages(table: pa.Table, parts: int) -> pa.Table:
    """The labels that nodes which changed last round send to their neighbours."""
    changed = table.column("changed").to_numpy().astype(bool)
    sent = table.filter(pa.array(changed))
    lengths = pc.list_value_length(sent.column("nbrs")).to_numpy(zero_copy_only=False) if sent.num_rows \
        else np.zeros(0, dtype=np.int64)
    targets = pc.list_flatten(sent.column("nbrs")).to_numpy() if sent.num_rows else np.zeros(0, np.int64)
    labels = np.repeat(sent.column("label").to_numpy(), lengths)
    return pa.table({"node": targets, "label": labels, "part": targets % parts}, schema=MESSAGE_SCHEMA)


def _relabel(table: pa.Table) -> pa.Table:
    """State rows (``nbrs`` not null) and messages of one partition -> the new state of its nodes."""
    is_state = pc.is_valid(table.column("nbrs"))
    state, messages = table.filter(is_state), table.filter(pc.invert(is_state))
    node, label = state.column("node").to_numpy(), state.column("label").to_numpy()
    best = label.copy()
    if messages.num_rows:
        index = {int(n): i for i, n in enumerate(node.tolist())}
        where = np.array([index[int(n)] for n in messages.column("node").to_numpy().tolist()], dtype=np.int64)
        np.minimum.at(best, where, messages.column("label").to_numpy())
    state = state.select(STATE_SCHEMA.names)
    state = state.set_column(1, "label", pa.array(best, pa.int64()))
    state = state.set_column(6, "changed", pa.array((best < label).astype(np.int64), pa.int64()))
    return state.cast(STATE_SCHEMA)


def _as_union_rows(table: pa.Table, parts: int) -> pa.Table:
    """State rows in the shape shared with messages, so both shuffle together."""
    return _with_part(table, "node", parts)


def _pad_messages(table: pa.Table) -> pa.Table:
    n = table.num_rows
    return pa.table({"node": table.column("node"), "label": table.column("label"),
                     "nbrs": pa.nulls(n, pa.list_(pa.int64())), "id": pa.nulls(n, pa.string()),
                     "rank": pa.nulls(n, pa.float64()), "link": pa.nulls(n, pa.float64()),
                     "changed": pa.nulls(n, pa.int64()), "part": table.column("part")})


def _decide(table: pa.Table) -> pa.Table:
    """Per component (rows grouped by label): its size and keeper, the highest rank then the first position."""
    label, node = table.column("label").to_numpy(), table.column("node").to_numpy()
    rank, ids = table.column("rank").to_numpy(), table.column("id").to_pylist()
    order, starts, sizes = _groups(label)
    kept = np.empty(len(node), dtype=object)
    size = np.empty(len(node), dtype=np.int64)
    keeper = np.zeros(len(node), dtype=bool)
    for start, count in zip(starts.tolist(), sizes.tolist()):
        rows = order[start:start + count]
        best = rows[np.lexsort((node[rows], -rank[rows]))[0]]
        kept[rows], size[rows], keeper[best] = ids[best], count, True
    return pa.table({"node": node, "kept": kept.tolist(), "size": size, "link": table.column("link"),
                     "keeper": keeper}, schema=MEMBER_SCHEMA)


def connected_components(edges, cpus: int, parts: int, max_rounds: int = 10_000) -> Components:
    """Components of ``edges`` (a dataset of ``u, v, sim, id_u, id_v, rank_u, rank_v`` rows)."""
    state = edges.map_batches(_half_edges, fn_kwargs={"parts": parts}, batch_format="pyarrow", batch_size=None) \
        .groupby("part", num_partitions=cpus).map_groups(_initial_state, batch_format="pyarrow").materialize()
    rounds, moved, nodes = 0, 0, state.count()
    while rounds < max_rounds:
        messages = state.map_batches(_messages, fn_kwargs={"parts": parts}, batch_format="pyarrow",
                                     batch_size=None).materialize()
        if messages.count() == 0:  # no label changed in the last round (counted from block metadata)
            break
        rounds += 1
        moved += nodes + messages.count()
        rows = state.map_batches(_as_union_rows, fn_kwargs={"parts": parts}, batch_format="pyarrow", batch_size=None)
        padded = messages.map_batches(_pad_messages, batch_format="pyarrow", batch_size=None)
        state = rows.union(padded).groupby("part", num_partitions=cpus) \
            .map_groups(_relabel, batch_format="pyarrow").materialize()
    members = state.map_batches(_with_part, fn_kwargs={"column": "label", "parts": parts}, batch_format="pyarrow",
                                batch_size=None).groupby("part", num_partitions=cpus) \
        .map_groups(_decide, batch_format="pyarrow")
    return Components(members=members, iterations=rounds, nodes=nodes, moved=moved)
