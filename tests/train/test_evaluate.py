import json

import pytest
from typer.testing import CliRunner

from dataflywheel.cli import app
from dataflywheel.train.evaluate import bootstrap_ci, judge_spec_from_env, win_rate
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


class RuleJudge:
    """A deterministic judge for the swap logic: prefers the answer holding ``mark``, or always says ``always``."""

    def __init__(self, mark: str = "", always: str = ""):
        self.mark, self.always = mark, always

    def _letter(self, conversation) -> str:
        if self.always:
            return self.always
        prompt = conversation[-1]["content"]
        shown_first = prompt.split("### Response A:")[1].split("### Response B:")[0]
        return "A" if self.mark in shown_first else "B"

    def chat_top_logprobs(self, conversations, k, labels=()):
        return [{self._letter(c): -0.1, "C": -3.0} for c in conversations]


def test_win_rate_judges_both_orders_and_calls_disagreement_a_tie():
    records = [{"messages": [{"role": "user", "content": f"question {i}"}, {"role": "assistant", "content": "x"}]}
               for i in range(4)]
    good, bad = ["GOOD answer"] * 4, ["poor answer"] * 4
    assert win_rate(RuleJudge(mark="GOOD"), records, good, bad)["win_rate"] == 1.0
    assert win_rate(RuleJudge(mark="GOOD"), records, bad, good)["win_rate"] == 0.0
    biased = win_rate(RuleJudge(always="A"), records, good, bad)  # always the first shown: the orders disagree
    assert biased["win_rate"] == 0.5 and biased["ties"] == 4


def test_the_judge_comes_from_the_environment_when_both_variables_are_set(monkeypatch):
    monkeypatch.delenv("DATAFLYWHEEL_JUDGE_MODEL", raising=False)
    monkeypatch.setenv("DATAFLYWHEEL_JUDGE_BASE_URL", "http://127.0.0.1:9/v1")
    assert judge_spec_from_env() is None
    monkeypatch.setenv("DATAFLYWHEEL_JUDGE_MODEL", "big-judge")
    assert judge_spec_from_env() == {"backend": "openai", "model": "big-judge",
                                     "options": {"base_url": "http://127.0.0.1:9/v1"}}
