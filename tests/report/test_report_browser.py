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


def test_preference_pairs_show_both_answers_and_every_turn(page, tmp_path):
    """A multi-turn preference record: the system prompt, the earlier exchange, chosen and rejected all shown."""
    from dataflywheel.pipeline import LocalExecutor, parse_recipe
    from tests.conftest import write_jsonl

    prompt = [{"role": "system", "content": "You are a careful tutor."},
              {"role": "user", "content": "What is the capital of Australia?"},
              {"role": "assistant", "content": "Canberra is the capital."},
              {"role": "user", "content": "And its largest city?"}]
    rows = [{"prompt": prompt, "chosen": [{"role": "assistant", "content": "Sydney is the largest city."}],
             "rejected": [{"role": "assistant", "content": "Melbourne has always been the largest city."}]},
            {"prompt": [{"role": "user", "content": "Name a prime number above 10."}],
             "chosen": [{"role": "assistant", "content": "11 is prime."}],
             "rejected": [{"role": "assistant", "content": "12 is prime."}]}]
    data = write_jsonl(tmp_path / "pairs.jsonl", rows)
    recipe = parse_recipe({"input": {"path": str(data)}, "output": {"dir": str(tmp_path / "run")}, "cache": "off",
                           "steps": [{"op": "select.length_filter", "min_response_words": 1}]})
    LocalExecutor(recipe, quiet=True).execute()
    open_report(page, tmp_path / "run")
    page.fill("#search", "largest city")
    [card] = page.locator("#records .record").all()
    assert card.locator(".answer-rejected").inner_text() == "rejected: Melbourne has always been the largest city."
    assert card.locator(".chosen").inner_text() == "chosen: Sydney is the largest city."
    assert [t.inner_text() for t in card.locator(".turn").all()] == [
        "system: You are a careful tutor.", "user: What is the capital of Australia?",
        "assistant: Canberra is the capital.", "user: And its largest city?"]
    page.fill("#search", "12 is prime")  # the rejected answer is searchable
    [single] = page.locator("#records .record").all()
    assert single.locator(".turn").count() == 0 and "instruction: Name a prime number above 10." in single.inner_text()
