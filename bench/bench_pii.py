"""PII redaction: our recognizers (``enhance.pii``) vs Microsoft Presidio's pattern recognizers, one run.

    python bench/bench_pii.py            # writes bench/results/pii.json

Quality: precision and recall per type on the labelled set of the tests (tests/data/pii_labelled.jsonl).
Speed: records/s on that set and on 3,000 real records (1,500 alpaca_eval instructions + answers, 1,500
t0_train_50k prompts + completions), with the number of findings per type there (no labels: a finding in
that data is mostly a real address or phone number written in an answer, or a false alarm).

Presidio (presidio-analyzer, from ``.venv-presidio``, see ``make bench-peers``) runs its Email, Phone,
Ip, CreditCard and Iban recognizers through an ``AnalyzerEngine`` whose NLP engine is a blank spaCy English
pipeline (tokens for the context words; no model download), every result kept (score threshold 0). Presidio
has no recognizer for API keys or secrets. Both run in one process each, after an untimed warm-up.
"""

from __future__ import annotations

import glob
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
PRESIDIO_PYTHON = ROOT / ".venv-presidio" / "bin" / "python"
RESULTS = ROOT / "bench" / "results" / "pii.json"
REAL_EACH = 1500

PRESIDIO_SCRIPT = r"""
import json, sys, time, spacy, tempfile
from presidio_analyzer import AnalyzerEngine, RecognizerRegistry
from presidio_analyzer.nlp_engine import SpacyNlpEngine
from presidio_analyzer.predefined_recognizers import (CreditCardRecognizer, EmailRecognizer, IbanRecognizer,
                                                      IpRecognizer, PhoneRecognizer)
TYPES = {"EMAIL_ADDRESS": "EMAIL", "PHONE_NUMBER": "PHONE", "IP_ADDRESS": "IP_ADDRESS", "CREDIT_CARD": "CREDIT_CARD",
         "IBAN_CODE": "IBAN"}
blank = tempfile.mkdtemp()
spacy.blank("en").to_disk(blank)
registry = RecognizerRegistry()
for recognizer in (EmailRecognizer(), PhoneRecognizer(), IpRecognizer(), CreditCardRecognizer(), IbanRecognizer()):
    registry.add_recognizer(recognizer)
engine = AnalyzerEngine(registry=registry, nlp_engine=SpacyNlpEngine(models=[{"lang_code": "en", "model_name": blank}]),
                        supported_languages=["en"])
sets = json.load(open(sys.argv[1]))
engine.analyze("warm up: a@b.com 203.0.113.9 +1 415 555 0132", language="en")
out = {}
for name, texts in sets.items():
    started = time.perf_counter()
    spans = [[(r.start, r.end, TYPES[r.entity_type]) for r in engine.analyze(t, language="en")] for t in texts]
    out[name] = {"seconds": time.perf_counter() - started, "spans": spans}
json.dump(out, open(sys.argv[2], "w"))
"""


def real_texts() -> list[str]:
    texts = []
    for path in sorted(glob.glob(str(DATA / "alpaca_eval" / "outputs" / "*.jsonl"))):
        texts += [r["instruction"] + "\n\n" + r["output"] for r in map(json.loads, open(path, encoding="utf-8"))]
    step = max(1, len(texts) // REAL_EACH)
    alpaca = texts[::step][:REAL_EACH]
    t0 = []
    for path in sorted(glob.glob(str(DATA / "t0_train_50k" / "*.jsonl"))):
        t0 += [r["prompt"] + "\n\n" + r["completion"] for r in map(json.loads, open(path, encoding="utf-8"))]
    step = max(1, len(t0) // REAL_EACH)
    return alpaca + t0[::step][:REAL_EACH]


def run_ours(sets: dict[str, list[str]]) -> dict:
    sys.path.insert(0, str(ROOT / "src"))
    from dataflywheel.ops.enhance.pii_patterns import find_pii

    find_pii("warm up: a@b.com 203.0.113.9 +1 415 555 0132")
    out = {}
    for name, texts in sets.items():
        started = time.perf_counter()
        spans = [[(s.start, s.end, s.type) for s in find_pii(t)] for t in texts]
        out[name] = {"seconds": time.perf_counter() - started, "spans": spans}
    return out


def run_presidio(sets: dict[str, list[str]]) -> dict | str:
    if not PRESIDIO_PYTHON.exists():
        return "skipped: no .venv-presidio (make bench-peers)"
    with tempfile.TemporaryDirectory() as tmp:
        source, target = Path(tmp) / "in.json", Path(tmp) / "out.json"
        source.write_text(json.dumps(sets))
        done = subprocess.run([str(PRESIDIO_PYTHON), "-c", PRESIDIO_SCRIPT, str(source), str(target)],
                              capture_output=True, text=True)
        if done.returncode:
            return f"failed: {done.stderr[-2000:]}"
        return json.loads(target.read_text())


def summarise(name: str, run: dict, rows: list[dict], n_real: int, real_chars: int) -> dict:
    sys.path.insert(0, str(ROOT))
    from tests.ops.test_pii import per_type_scores

    labelled = run["labelled"]
    spans = iter(labelled["spans"])
    scores = per_type_scores(rows, lambda _text: [tuple(s) for s in next(spans)])
    found = {}
    for spans_of_text in run["real"]["spans"]:
        for _, _, kind in spans_of_text:
            found[kind] = found.get(kind, 0) + 1
    return {"method": name, "per_type": scores,
            "labelled_records_per_s": round(len(rows) / labelled["seconds"], 1),
            "real_records_per_s": round(n_real / run["real"]["seconds"], 1),
            "real_mb_per_s": round(real_chars / run["real"]["seconds"] / 1e6, 3),
            "real_findings": dict(sorted(found.items()))}


def main() -> None:
    sys.path.insert(0, str(ROOT))
    from tests.ops.test_pii import labelled

    rows = labelled()
    real = real_texts()
    sets = {"labelled": [r["text"] for r in rows], "real": real}
    results = {"ours": run_ours(sets), "presidio": run_presidio(sets)}
    chars = sum(map(len, real))
    report = {"labelled_records": len(rows), "real_records": len(real), "real_chars": chars, "methods": {}}
    for name, run in results.items():
        if isinstance(run, str):
            report["methods"][name] = run
            print(f"{name}: {run}")
            continue
        summary = summarise(name, run, rows, len(real), chars)
        report["methods"][name] = summary
        print(f"\n{name}: {summary['labelled_records_per_s']} labelled records/s, {summary['real_records_per_s']} real "
              f"records/s ({summary['real_mb_per_s']} MB/s); findings in the real records {summary['real_findings']}")
        for kind, s in summary["per_type"].items():
            print(f"  {kind:12s} precision {s['precision']:.3f}  recall {s['recall']:.3f}  "
                  f"({s['false_positives']} false positives, {s['missed']} missed of {s['labelled']})")
    if all(isinstance(r, dict) for r in report["methods"].values()):
        ours, theirs = report["methods"]["ours"], report["methods"]["presidio"]
        report["speed_ratio_real"] = round(ours["real_records_per_s"] / theirs["real_records_per_s"], 2)
        print(f"\nours / Presidio records/s on real records: {report['speed_ratio_real']}x")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=1))
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
