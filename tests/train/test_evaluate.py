import json

import pytest
from typer.testing import CliRunner

from dataflywheel.cli import app
from dataflywheel.train.evaluate import bootstrap_ci
from tests.conftest import EXAMPLE_DATA, write_jsonl


def test_bootstrap_ci_brackets_the_mean():
    low, high = bootstrap_ci([0.0, 1.0] * 50)
    assert low < 0.5 < high and 0.3 < low and high < 0.7
    assert bootstrap_ci([0.5] * 10) == (0.5, 0.5)


@pytest.mark.model
def test_a_model_against_itself_wins_half(tmp_path, monkeypatch):
    monkeypatch.setenv("DATAFLYWHEEL_CACHE", str(tmp_path / "calls.sqlite"))
    monkeypatch.delenv("DATAFLYWHEEL_JUDGE_BASE_URL", raising=False)
    rows = [json.loads(line) for line in EXAMPLE_DATA.read_text().splitlines()[:12:4]]
    heldout = write_jsonl(tmp_path / "heldout.jsonl", rows)
    result = CliRunner().invoke(app, ["evaluate", str(heldout), "--max-tokens", "24", "-o", str(tmp_path / "r.json")])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["records"] == 3
    assert report["a"]["reference_loss"] == pytest.approx(report["b"]["reference_loss"])
    duel = report["a_vs_b"]
    assert duel["win_rate"] == 0.5 and duel["ci95"][0] <= 0.5 <= duel["ci95"][1]
