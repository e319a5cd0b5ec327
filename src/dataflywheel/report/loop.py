"""The report of a `flywheel loop`: held-out loss per round (overall and per category), what each round synthesized
for which category, the steering plan, and the last round's training set to browse."""

from __future__ import annotations

from html import escape
from pathlib import Path

from dataflywheel.io import ReadReject, read_records
from dataflywheel.report.build import FIELDS, _page, _row
from dataflywheel.report.svg import bars, lines


def _rounds_table(manifest: dict) -> str:
    baseline = manifest.get("baseline") or {}
    rows = [f"<tr><td>0 (base model)</td><td colspan=6></td><td class='num'>{baseline.get('loss', float('nan')):.4f}"
            "</td><td></td><td></td></tr>"] if baseline else []
    for m in manifest.get("rounds", []):
        weak = ", ".join(m["weak_from_last_round"]) or "none (round 1: even)"
        rows.append(f"<tr><td>{m['round']}</td><td class='num'>{m['pool']}</td><td class='num'>{m['curated']}</td>"
                    f"<td class='num'>{m.get('carried', 0)}</td><td class='num'>{m['synthesized']}</td>"
                    f"<td class='num'>{m['train_set']}</td>"
                    f"<td class='num'>{m['train']['steps']}</td><td class='num'>{m['heldout']['loss']:.4f}</td>"
                    f"<td class='num'>{m['improvement']:+.4f}</td><td>{escape(weak)}</td></tr>")
    return ("<h2>Rounds</h2><table id='rounds'><tr><th>round</th><th>pool</th><th>curated</th><th>carried over</th>"
            "<th>synthesized</th><th>train set</th><th>train steps</th><th>held-out loss</th><th>change</th>"
            "<th>steered at (weakest)</th>"
            "</tr>" + "".join(rows) + "</table>")


def _plan_table(manifest: dict) -> str:
    rows = []
    for m in manifest.get("rounds", []):
        for category, entry in m["plan"].items():
            rows.append(f"<tr><td>{m['round']}</td><td>{escape(category)}</td><td class='num'>{entry['weight']:g}</td>"
                        f"<td class='num'>{entry['seeds']}</td><td class='num'>{entry['target']}</td>"
                        f"<td class='num'>{entry.get('generated', 0)}</td>"
                        f"<td class='num'>{m['heldout']['categories'].get(category, float('nan')):.4f}</td>"
                        f"<td>{escape(entry.get('note', ''))}</td></tr>")
    return ("<h2>Steering</h2><table id='plan'><tr><th>round</th><th>category</th><th>weight</th><th>seeds</th>"
            "<th>target</th><th>generated</th><th>held-out loss after</th><th></th></tr>" + "".join(rows) + "</table>")


def _charts(manifest: dict) -> str:
    rounds = manifest.get("rounds", [])
    baseline = manifest.get("baseline") or {}
    labels = ["base"] + [f"round {m['round']}" for m in rounds]
    evaluations = [baseline] + [m["heldout"] for m in rounds]
    categories = sorted({c for e in evaluations for c in e.get("categories", {})})

    def change(evaluation: dict, category: str | None) -> float | None:
        """Loss minus the base model's: categories differ in loss far more than rounds move them."""
        now, base = ((evaluation.get("loss"), baseline.get("loss")) if category is None else
                     (evaluation.get("categories", {}).get(category), baseline.get("categories", {}).get(category)))
        return None if now is None or base is None else now - base

    series = {"all": [change(e, None) for e in evaluations]}
    series.update({c: [change(e, c) for e in evaluations] for c in categories})
    synthesized = {f"round {m['round']}": {c: e.get("generated", 0) for c, e in m["plan"].items()} for m in rounds}
    charts = [lines(series, labels, "held-out loss change vs the base model (lower is better)"),
              bars(synthesized, "records synthesized per category")]
    return "<h2>Charts</h2><div class='charts'>" + "".join(c for c in charts if c) + "</div>"


def write_loop_report(out_dir: str | Path, manifest: dict) -> Path:
    """Render ``report.html`` in a loop's directory from its manifest (``loop.json``)."""
    out_dir = Path(out_dir)
    rounds = manifest.get("rounds", [])
    rows = []
    if rounds:
        last = rounds[-1]["round"]
        for record in read_records(out_dir / f"round_{last}" / "train_set.jsonl"):
            if not isinstance(record, ReadReject):
                made = record["meta"].get("loop_round")
                rows.append(_row(record, "kept", f"synthesized in round {made}" if made else "curated"))
    body = (f"<p>Status: <b>{escape(manifest.get('status', ''))}</b>. {escape(manifest.get('stopped', ''))}</p>"
            + _rounds_table(manifest) + _charts(manifest) + _plan_table(manifest))
    data = {"fields": FIELDS, "records": rows, "steps": sorted({r[2] for r in rows}), "reasons": [],
            "scores": sorted({k for r in rows for k in r[7]})}
    note = (f"<p class='muted'>The training set of the last round ({len(rows)} records); each stage's run directory "
            "in round_N/ has its own report with the rejects.</p>")
    target = out_dir / "report.html"
    target.write_text(_page("dataflywheel loop", str(out_dir), body, data, note), encoding="utf-8")
    return target
