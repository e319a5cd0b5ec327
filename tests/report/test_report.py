import json
import re

import pytest
from typer.testing import CliRunner

from dataflywheel.cli import app
from dataflywheel.report.build import reason_kind
from tests.conftest import EXAMPLE_DATA
from tests.report.conftest import INJECTION


def test_every_run_writes_a_self_contained_report(report_run):
    run_dir, manifest = report_run
    html = (run_dir / "report.html").read_text()
    assert manifest["report"] == str(run_dir / "report.html")
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//|url\(|@import""", html)  # nothing to fetch
    for step in manifest["steps"]:
        row = re.search(rf'<tr data-step="{step["name"]}">(.*?)</tr>', html).group(1)
        assert f'class="num in">{step["in"]}<' in row and f'class="num rejected">{step["rejected"]}<' in row


def test_record_text_never_reaches_the_page_as_markup(report_run):
    run_dir, _ = report_run
    html = (run_dir / "report.html").read_text()
    assert "window.__pwned" in html  # the text is there (escaped), so the browser can show it
    assert html.count("<script") == 2  # our data block and our code, nothing from records
    assert "onerror=" not in html.split('id="record-data">')[0]
    data = html.split('id="record-data">', 1)[1].split("</script>", 1)[0]
    assert "<" not in data and ">" not in data
    assert any(INJECTION in row[6] for row in json.loads(data)["records"])


def test_report_command_regenerates(report_run, tmp_path):
    run_dir, _ = report_run
    (run_dir / "report.html").unlink()
    result = CliRunner().invoke(app, ["report", str(run_dir)])
    assert result.exit_code == 0 and (run_dir / "report.html").exists()
    assert CliRunner().invoke(app, ["report", str(tmp_path)]).exit_code == 2


def test_inspect_html(tmp_path):
    target = tmp_path / "inspect.html"
    result = CliRunner().invoke(app, ["inspect", str(EXAMPLE_DATA), "--html", str(target)])
    assert result.exit_code == 0
    html = target.read_text()
    assert "response length (tokens)" in html and ">206<" in html


def test_reasons_group_without_their_ids():
    assert reason_kind("exact duplicate of 4d1a3d5616cdfda589b5 (conversation)") == \
        "exact duplicate of <id> (conversation)"
    assert reason_kind("response too short: 3 words < 5") == "response too short: # words < #"


@pytest.mark.model
def test_embedding_map_when_a_step_embedded(tmp_path):
    from dataflywheel.pipeline import LocalExecutor, parse_recipe

    recipe = parse_recipe({"input": {"path": str(EXAMPLE_DATA)}, "output": {"dir": str(tmp_path / "run")},
                           "cache": "off", "steps": [{"op": "score.embedding", "field": "instruction"},
                                                     {"op": "select.top_k", "scores": {"density": -1}, "count": 50}]})
    manifest = LocalExecutor(recipe, quiet=True).execute()
    html = (tmp_path / "run" / "report.html").read_text()
    svg = html.split('aria-label="embedding map (PCA), kept vs dropped"', 1)[1].split("</svg>", 1)[0]
    assert svg.count("<circle") == manifest["totals"]["read"]
    assert "kept (50)" in svg and f"dropped ({manifest['totals']['read'] - 50})" in svg


def test_a_large_run_browses_an_even_sample_and_says_so(report_run, tmp_path, monkeypatch):
    """The browser of a large run holds about BROWSE_LIMIT records chosen by id (kept and rejected at the
    same rate); the funnel still counts every record."""
    from dataflywheel.report import build

    run_dir, manifest = report_run
    monkeypatch.setattr(build, "BROWSE_LIMIT", 40)
    page = build.write_run_report(run_dir, tmp_path / "sampled.html").read_text()
    rows = json.loads(page.split('id="record-data">', 1)[1].split("</script>", 1)[0])["records"]
    total = manifest["totals"]["output"] + manifest["totals"]["rejected"]
    step = -(-total // 40)
    assert 0.5 * total / step <= len(rows) <= 1.6 * total / step
    assert {r[0] for r in rows} == {"kept", "rejected"}
    assert f"{len(rows)} of {total} records, 1 in {step} chosen by id" in page
    assert f'class="num out">{manifest["totals"]["output"]}<' in page  # the funnel is not sampled
    full = (run_dir / "report.html").read_text()
    assert "browse-note" not in full
    assert len(json.loads(full.split('id="record-data">', 1)[1].split("</script>", 1)[0])["records"]) == total


def test_categories_after_rebalancing_count_the_repeats(tmp_path):
    from dataflywheel.pipeline import LocalExecutor, parse_recipe

    recipe = parse_recipe({"input": {"path": str(EXAMPLE_DATA)}, "output": {"dir": str(tmp_path / "run")},
                           "cache": "off", "steps": [{"op": "enhance.rebalance", "field": "meta.dataset",
                                                      "target": "uniform", "size": 300}]})
    LocalExecutor(recipe, quiet=True).execute()
    html = (tmp_path / "run" / "report.html").read_text()
    assert "kept, meta.repeat counted" in html


def test_lengths_count_words_until_the_tokenizer_is_there_then_tokens(monkeypatch, tmp_path):
    """The bundled tokenizer is loaded once per process; a run's report made before the bundled model was
    first converted (no tokenizer.json yet) counts words, and a later one, once it is there, tokens."""
    from dataflywheel.models import bundled
    from dataflywheel.report import build

    bundled.smollm2_dir()  # the bundled model converted: its tokenizer.json is there (cached after the first run)
    monkeypatch.setattr(build, "_TOKENIZER", [])
    real = bundled.model_cache_dir
    monkeypatch.setattr(bundled, "model_cache_dir", lambda: tmp_path)
    unit, count = build._length_unit()
    assert unit == "words" and count(["two words"]) == [2] and build._TOKENIZER == []
    monkeypatch.setattr(bundled, "model_cache_dir", real)
    build.prepare()
    unit, count = build._length_unit()
    assert unit == "tokens" and len(build._TOKENIZER) == 1 and count(["two words"])[0] >= 2
