"""Load time of the report of a ~55k-record run in headless Chromium (goal: under 3 s).

    python bench/bench_report.py

Runs read -> exact dedup -> length filter over all of t0_train_50k, then opens report.html in Debian's
chromium (Playwright) five times and reports the time until the page is ready (data parsed, first page
of the sample browser drawn) and the time of one search over all records.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "t0_train_50k"
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> None:
    from playwright.sync_api import sync_playwright

    from dataflywheel.io import read_records, write_records
    from dataflywheel.pipeline import LocalExecutor, parse_recipe
    from report import machine, table, write_section

    work = Path(tempfile.mkdtemp(prefix="bench-report-"))
    records = [r for path in sorted(DATA.glob("*.jsonl")) for r in read_records(path) if isinstance(r, dict)]
    write_records(records, work / "t0.jsonl", "completion")
    recipe = parse_recipe({"input": {"path": str(work / "t0.jsonl")}, "output": {"dir": str(work / "run")},
                           "cache": "off", "steps": [{"op": "select.exact_dedup"},
                                                     {"op": "select.length_filter", "min_response_words": 2}]})
    started = time.perf_counter()
    manifest = LocalExecutor(recipe, quiet=True).execute()
    run_seconds = time.perf_counter() - started
    report = Path(manifest["report"])
    loads, searches = [], []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium",
                                             args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        for _ in range(5):
            page = browser.new_page()
            started = time.perf_counter()
            page.goto(report.as_uri())
            page.wait_for_selector("body[data-ready='1']", timeout=60_000)
            loads.append(time.perf_counter() - started)
            started = time.perf_counter()
            page.fill("#search", "question")
            page.wait_for_function("document.getElementById('result-count').textContent.length > 0")
            searches.append(time.perf_counter() - started)
            page.close()
        browser.close()
    rows = [["records in the report", manifest["totals"]["read"]],
            ["report.html size", f"{report.stat().st_size / 1e6:.1f} MB"],
            ["run incl. writing the report", f"{run_seconds:.1f} s"],
            ["page ready, median of 5 (min-max)", f"{statistics.median(loads):.2f} s ({min(loads):.2f}-{max(loads):.2f})"],
            ["search over all records, median", f"{statistics.median(searches):.2f} s"]]
    body = (f"`python bench/bench_report.py` on {machine()}, Debian chromium headless via Playwright. The sample "
            "browser keeps every record (text cut to 400 characters) and draws 50 a page.\n\n"
            + table(["what", "measured"], rows))
    write_section("HTML report load time (55k-record run)", body)
    print(body)


if __name__ == "__main__":
    main()
