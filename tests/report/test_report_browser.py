"""The report in headless Chromium (Debian's chromium, driven by Playwright): numbers, search, no script runs."""

import json
import os
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.report.conftest import INJECTION

pytestmark = pytest.mark.browser
CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(os.environ.get("DATAFLYWHEEL_TEST_ARTIFACTS", REPO / "test-artifacts"))


@pytest.fixture(scope="module")
def page():
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is missing: install Debian's chromium (.ci/run does) to run the browser tests")
    sync_api = pytest.importorskip("playwright.sync_api", reason="needs pip install playwright (dev extra)")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run"])
        yield browser.new_page(viewport={"width": 1200, "height": 1400})
        browser.close()


def open_report(page, run_dir):
    page.goto((run_dir / "report.html").resolve().as_uri())
    page.wait_for_selector("body[data-ready='1']")


def test_funnel_search_and_screenshot(page, report_run):
    run_dir, manifest = report_run
    open_report(page, run_dir)
    for step in manifest["steps"]:
        row = page.locator(f"#funnel tr[data-step='{step['name']}']")
        assert row.locator("td.in").inner_text() == str(step["in"])
        assert row.locator("td.out").inner_text() == str(step["out"])
        assert row.locator("td.rejected").inner_text() == str(step["rejected"])
    kept_total = manifest["totals"]["output"] + manifest["totals"]["rejected"]
    assert page.locator("#result-count").inner_text() == f"{kept_total} records"

    question = "How did US states get their names"
    rows = [json.loads(line) for line in (run_dir.parent / "data.jsonl").read_text().splitlines()]
    expected = sum(question in r["instruction"] for r in rows)
    page.fill("#search", question)
    assert page.locator("#result-count").inner_text() == f"{expected} records"
    assert page.locator("#records .record").count() == expected
    page.select_option("#status", "rejected")
    rejected = page.locator("#records .record")
    assert rejected.count() == 1 and "exact duplicate of" in rejected.first.inner_text()  # the planted duplicate
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.select_option("#status", "")
    page.screenshot(path=str(ARTIFACTS / "report.png"), full_page=True)
    assert (ARTIFACTS / "report.png").stat().st_size > 10_000


def test_injected_markup_is_shown_as_text_and_never_runs(page, report_run):
    run_dir, _ = report_run
    open_report(page, run_dir)
    page.fill("#search", "Repeat this exactly")
    card = page.locator("#records .record")
    assert card.count() == 1
    assert INJECTION in card.first.inner_text()
    assert page.evaluate("typeof window.__pwned") == "undefined"
    assert page.locator("#records img").count() == 0 and page.locator("#records script").count() == 0
