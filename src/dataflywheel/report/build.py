"""Build report.html from a run directory (or plain statistics for a dataset file)."""

from __future__ import annotations

from collections import Counter
from html import escape
from pathlib import Path
from typing import Iterator

import numpy as np
import orjson
import pyarrow.parquet as pq

from dataflywheel.io import ReadReject, read_records
from dataflywheel.pipeline.run_dir import RunDir, read_table, reason_kind, records_at, rows_at, values_at
from dataflywheel.records import instruction_text, loads, prompt_turns, repeats, response_text
from dataflywheel.report.sample import present, sample_key, sample_keys, sample_mask, sample_step, sampled
from dataflywheel.report.svg import bars, histogram, scatter
from dataflywheel.text import word_count

TEMPLATE = Path(__file__).with_name("template.html")
FIELDS = ["status", "id", "step", "reason", "kind", "instruction", "response", "scores", "parents", "turns",
          "rejected"]
SNIPPET = 400
CATEGORY_KEYS = ("category", "dataset", "task", "skill")


def _json_for_html(value) -> str:
    """JSON that cannot close its <script> element or open a comment."""
    text = orjson.dumps(value, default=str).decode()  # NaN/inf become null; _finite has removed them
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _finite(scores: dict) -> dict:
    return {k: (v if isinstance(v, (int, float)) and v == v and abs(v) != float("inf") else None)
            for k, v in scores.items()}


def _turn_text(turn: dict) -> str:
    calls = turn.get("tool_calls") or []
    named = ", ".join(f"{c['function']['name']}({c['function']['arguments']})" for c in calls)
    return (turn["content"] + ("\n" if turn["content"] and named else "") + (f"calls {named}" if named else ""))[:SNIPPET]


def _turns(record: dict) -> list:
    """Every turn before the final answer as [role, text], when there is more than the one instruction
    (a system prompt, earlier exchanges, tool calls): empty for a single question."""
    turns = prompt_turns(record)
    if len(turns) <= 1:
        return []
    return [[t["role"], _turn_text(t)] for t in turns]


def _row(record: dict, status: str, step: str = "", reason: str = "") -> list:
    parents = [p for entry in record.get("lineage", []) for p in entry.get("parents", [])]
    rejected = record.get("rejected")
    return [status, record["id"], step, reason, reason_kind(reason) if reason else "",
            instruction_text(record)[:SNIPPET], response_text(record)[:SNIPPET], _finite(record.get("scores", {})),
            parents, _turns(record), _turn_text(rejected) if rejected else None]


def _category(record: dict) -> str | None:
    meta = record.get("meta", {})
    return next((str(meta[k]) for k in CATEGORY_KEYS if k in meta), None)


_TOKENIZER: list = []  # the tokenizer once loaded (a missing one is looked for again: it may be written later)


def _tokenizer():
    """The bundled SmolLM2 tokenizer, read with the ``tokenizers`` library alone (importing transformers would
    cost more than the whole report); None without it. Loaded once per process (~0.15 s)."""
    if _TOKENIZER:
        return _TOKENIZER[0]
    try:
        from tokenizers import Tokenizer

        from dataflywheel.models.bundled import model_cache_dir, smollm2_gguf

        gguf = smollm2_gguf()
        path = model_cache_dir() / f"{gguf.stem}-{gguf.stat().st_size}" / "tokenizer.json"
        if not path.exists():  # written when the bundled model is first converted
            return None
        _TOKENIZER.append(Tokenizer.from_file(str(path)))
        return _TOKENIZER[0]
    except (ImportError, FileNotFoundError):
        return None


def prepare() -> None:
    """Load what the report needs before it is built (a run does this while its workers compute)."""
    _tokenizer()


def _length_unit():
    """(name, counter of a list of texts): tokens of the bundled SmolLM2 tokenizer, or words without it."""
    tokenizer = _tokenizer()
    if tokenizer is None:
        return "words", lambda texts: [word_count(t) for t in texts]
    encode = getattr(tokenizer, "encode_batch_fast", tokenizer.encode_batch)  # no offsets (tokenizers >= 0.21)
    return "tokens", _memoized(lambda texts: [len(e.ids) for e in encode(texts, add_special_tokens=False)])


def _memoized(count):
    """``count`` over a list of texts, each distinct text counted once (a kept record's text is usually
    the text it was read with)."""
    known: dict[str, int] = {}

    def counted(texts: list[str]) -> list[int]:
        new = list(dict.fromkeys(t for t in texts if t not in known))
        known.update(zip(new, count(new) if new else []))
        return [known[t] for t in texts]

    return counted


LENGTH_SAMPLE = 500
"""Length histograms tokenize at most this many records per series (an even, deterministic sample)."""


def _lengths_and_categories(records, count, step: int = 1):
    categories = Counter(c for c in map(_category, records) if c is not None)
    sample = [r for r in records if sampled(r["id"], step)]
    return (count([instruction_text(r) for r in sample]) if sample else [],
            count([response_text(r) for r in sample]) if sample else [], categories)


BROWSE_LIMIT = 10_000
"""The record browser holds about this many records (kept and rejected together, an even sample by id):
a page with every record of a large run would take longer to build than the run's steps and tens of MB."""


def _browse_note(step: int, shown: int, total: int) -> str:
    if step == 1:
        return ""
    return (f"<p class='muted' id='browse-note'>{shown:,} of {total:,} records, 1 in {step} chosen by id; the "
            "output file and rejected/ hold every one.</p>")


def _page(title: str, subtitle: str, body: str, data: dict, browse_note: str = "") -> str:
    return (TEMPLATE.read_text(encoding="utf-8").replace("{{TITLE}}", escape(title))
            .replace("{{SUBTITLE}}", escape(subtitle)).replace("{{BODY}}", body)
            .replace("{{BROWSE_NOTE}}", browse_note).replace("{{DATA}}", _json_for_html(data)))


def _funnel(manifest: dict, reasons: dict[str, Counter]) -> str:
    rows = []
    for step in manifest["steps"]:
        top = "".join(f"<li>{count} \u00d7 {escape(kind)}</li>" for kind, count in reasons.get(step["name"], Counter())
                      .most_common(6))
        rows.append(f'<tr data-step="{escape(step["name"])}"><td>{escape(step["name"])}</td><td>{escape(step["op"])}</td>'
                    f'<td class="num in">{step["in"]}</td><td class="num out">{step["out"]}</td>'
                    f'<td class="num rejected">{step["rejected"]}</td><td class="num">{step.get("generated", 0)}</td>'
                    f'<td class="num">{step["seconds"]:.2f}</td><td><ul class="reasons">{top}</ul></td></tr>')
    return ('<h2>Funnel</h2><table id="funnel"><tr><th>step</th><th>operator</th><th>in</th><th>out</th>'
            '<th>rejected</th><th>generated</th><th>seconds</th><th>top reject reasons</th></tr>' + "".join(rows)
            + "</table>")


def _usage(manifest: dict) -> str:
    rows = []
    for step in manifest["steps"]:
        for model, usage in (step.get("models") or {}).items():
            rows.append(f"<tr><td>{escape(step['name'])}</td><td>{escape(model)}</td>"
                        + "".join(f'<td class="num">{usage.get(k, 0)}</td>' for k in
                                  ("calls", "cache_hits", "prompt_tokens", "completion_tokens", "seconds")) + "</tr>")
        for what, count in (step.get("counters") or step.get("warnings") or {}).items():  # "warnings": manifests before Nov 2026
            rows.append(f"<tr><td>{escape(step['name'])}</td><td colspan=6>{count} \u00d7 {escape(what)}</td></tr>")
    if not rows:
        return "<h2>Model usage</h2><p class='muted'>No model calls in this run.</p>"
    return ("<h2>Model usage</h2><table id='usage'><tr><th>step</th><th>model</th><th>calls</th><th>cache hits</th>"
            "<th>prompt tokens</th><th>completion tokens</th><th>seconds</th></tr>" + "".join(rows) + "</table>")


def _rejects(paths: list[Path], reasons: dict[str, Counter], step: int) -> Iterator[dict]:
    """The reject rows in the browser's sample (``step``), counting every reject's kind of reason per step into
    ``reasons``; only the sampled rows become Python dicts."""
    for path in paths:
        table = read_table(path, columns=["step", "reason", "source", "id", "record", "raw"])
        for name, reason in zip(table.column("step").to_pylist(), table.column("reason").to_pylist()):
            reasons.setdefault(name, Counter())[reason_kind(reason)] += 1
        ids = table.column("id").combine_chunks()
        keys = sample_keys(ids)
        unread = np.flatnonzero(~present(ids))  # unreadable rows have no id: their raw text decides
        if len(unread):
            keys[unread] = [sample_key(raw) for raw in values_at(table.column("raw"), unread)]
        yield from rows_at(table, np.flatnonzero(keys % step == 0))


def write_run_report(run_dir: str | Path, target: str | Path | None = None, *, manifest: dict | None = None) -> Path:
    """Render report.html for a finished (or partly finished) run (``manifest``: the run's manifest when the
    caller holds a newer one than the file)."""
    run = RunDir(run_dir)
    manifest = manifest or run.read_manifest()
    if manifest is None:
        raise FileNotFoundError(f"{run.root} holds no manifest.json: not a run directory")
    steps = [s for s in manifest["steps"] if s["status"] == "done"]
    first, last = Path(steps[0]["checkpoint"]), Path(steps[-1]["checkpoint"])
    final_ids, read_ids = read_table(last, columns=["id"]).column(0), read_table(first, columns=["id"]).column(0)
    step = sample_step(max(len(read_ids), len(final_ids)), LENGTH_SAMPLE)  # one step for both series: comparable
    reject_files = sorted(run.rejected.glob("*.parquet"))
    rejected_count = sum(pq.ParquetFile(path).metadata.num_rows for path in reject_files)
    browse = sample_step(len(final_ids) + rejected_count, BROWSE_LIMIT)
    final_keys = sample_keys(final_ids)
    in_browser, in_lengths = final_keys % browse == 0, final_keys % step == 0
    chosen = in_browser | in_lengths
    kept = records_at(last, np.flatnonzero(chosen))  # only the sampled records become Python objects
    before = records_at(first, np.flatnonzero(sample_mask(read_ids, step)))
    browsed = [r for r, show in zip(kept, in_browser[chosen]) if show]  # charts of categories and scores too
    measured = [r for r, length in zip(kept, in_lengths[chosen]) if length]
    rows = [_row(r, "kept") for r in browsed]
    reasons: dict[str, Counter] = {}
    rejected_records = []
    for reject in _rejects(reject_files, reasons, browse):
        if reject["record"]:
            record = loads(reject["record"])
            rejected_records.append(record)
            rows.append(_row(record, "rejected", reject["step"], reject["reason"]))
        else:
            rows.append(["rejected", "", reject["step"], f"{reject['reason']} ({reject['source']})",
                         reason_kind(reject["reason"]), reject["raw"][:SNIPPET], "", {}, [], [], None])
    charts = []
    unit, count = _length_unit()
    b_ins, b_resp, _ = _lengths_and_categories(before, count)
    a_ins, a_resp, _ = _lengths_and_categories(measured, count)
    a_cat = Counter(c for c in map(_category, browsed) if c is not None)
    b_cat = a_cat + Counter(c for c in map(_category, rejected_records) if c is not None)  # kept + rejected
    weighted = Counter()  # kept, a record up-sampled by rebalancing (meta.repeat) counted as often as training will
    for record in browsed:
        if _category(record) is not None:
            weighted[_category(record)] += repeats(record)
    in_sample = f", 1 in {step} records" if step > 1 else ""
    charts.append(histogram({"read": b_ins, "kept": a_ins}, f"instruction length ({unit}{in_sample})"))
    charts.append(histogram({"read": b_resp, "kept": a_resp}, f"response length ({unit}{in_sample})"))
    in_browser = f" (1 in {browse} records)" if browse > 1 else ""
    score_names = sorted({k for r in browsed + rejected_records for k in r.get("scores", {})})
    for name in score_names:
        scored = [r["scores"][name] for r in browsed + rejected_records if name in r.get("scores", {})]
        charts.append(histogram({"scored": scored, "kept": [r["scores"][name] for r in browsed
                                                            if name in r["scores"]]}, f"score {name}{in_browser}"))
    if b_cat:
        kept = {"kept": dict(a_cat)} if weighted == a_cat else {"kept, meta.repeat counted": dict(weighted)}
        charts.append(bars({"in": dict(b_cat), **kept}, f"categories{in_browser}"))
    mapped = {"kept": [tuple(r["meta"]["map_2d"]) for r in browsed if "map_2d" in r.get("meta", {})],
              "dropped": [tuple(r["meta"]["map_2d"]) for r in rejected_records if "map_2d" in r.get("meta", {})]}
    embedding_map = scatter(mapped, "embedding map (PCA), kept vs dropped") if mapped["kept"] or mapped["dropped"] else \
        "<p class='muted'>No embedding map: no step of this run computed embeddings.</p>"
    totals = manifest.get("totals") or {}
    source = (manifest["recipe"].get("input") or {}).get("path", "generated")
    subtitle = (f"{source} \u2192 {totals.get('output', '?')} kept of "
                f"{totals.get('read', '?')} read, {totals.get('rejected', '?')} rejected; status {manifest['status']}")
    body = (_funnel(manifest, reasons) + "<h2>Distributions</h2><div class='charts'>" + "".join(c for c in charts if c)
            + "</div>" + embedding_map + _usage(manifest))
    data = {"fields": FIELDS, "records": rows, "steps": [s["name"] for s in steps],
            "reasons": sorted({r[4] for r in rows if r[4]}), "scores": score_names}
    target = Path(target) if target else run.root / "report.html"
    note = _browse_note(browse, len(rows), len(final_ids) + rejected_count)
    target.write_text(_page("dataflywheel run report", subtitle, body, data, note), encoding="utf-8")
    return target


def write_dataset_report(path: str | Path, target: str | Path, stats: dict) -> Path:
    """Render the statistics of a dataset file (``flywheel inspect --html``) with its records browsable."""
    records, unreadable = [], []
    for item in read_records(path):
        (unreadable if isinstance(item, ReadReject) else records).append(item)
    browse = sample_step(len(records) + len(unreadable), BROWSE_LIMIT)
    rows = [_row(r, "kept") for r in records if sampled(r["id"], browse)]
    rows += [["rejected", "", "read", f"{item.reason} ({item.source})", reason_kind(item.reason), item.raw[:SNIPPET],
              "", {}, [], [], None] for item in unreadable if sampled(item.raw, browse)]
    unit, count = _length_unit()
    step = sample_step(len(records), LENGTH_SAMPLE)
    ins, resp, categories = _lengths_and_categories(records, count, step)
    in_sample = f", 1 in {step} records" if step > 1 else ""
    charts = [histogram({"records": ins}, f"instruction length ({unit}{in_sample})"),
              histogram({"records": resp}, f"response length ({unit}{in_sample})")]
    score_names = sorted({k for r in records for k in r["scores"]})
    charts += [histogram({"records": [r["scores"][n] for r in records if n in r["scores"]]}, f"score {n}")
               for n in score_names]
    if categories:
        charts.append(bars({"records": dict(categories)}, "categories"))
    summary = "".join(f"<tr><td>{escape(k)}</td><td>{escape(str(stats[k]))}</td></tr>"
                      for k in ("file_type", "format", "records", "unreadable", "preference_records"))
    body = (f"<h2>Summary</h2><table id='summary'>{summary}</table><h2>Distributions</h2><div class='charts'>"
            + "".join(c for c in charts if c) + "</div>")
    data = {"fields": FIELDS, "records": rows, "steps": [], "reasons": sorted({r[4] for r in rows if r[4]}),
            "scores": score_names}
    note = _browse_note(browse, len(rows), len(records) + len(unreadable))
    Path(target).write_text(_page(f"dataflywheel inspect: {Path(path).name}", str(path), body, data, note),
                            encoding="utf-8")
    return Path(target)
