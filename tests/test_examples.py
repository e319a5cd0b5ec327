"""Every example recipe runs on the shipped example data and keeps the invariant."""

from pathlib import Path

import pytest
import yaml

from dataflywheel.pipeline import LocalExecutor, parse_recipe
from tests.conftest import REPO

LOOP_RECIPES = {"loop.yaml"}
"""Recipes of `flywheel loop` (the others are `flywheel run` recipes)."""
RECIPES = sorted(p for p in (REPO / "examples" / "recipes").glob("*.yaml") if p.name not in LOOP_RECIPES)
USES_MODELS = {"clean.yaml", "select.yaml", "self_instruct.yaml", "preferences.yaml", "evol.yaml",
               "magpie.yaml", "grounded_qa.yaml", "enhance_models.yaml"}
USES_MODELS.add("distill.yaml")
MODEL_ROWS = 60
"""Input rows of a recipe that uses models (the full example files take minutes with the model on a CPU)."""


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_example_recipe_runs(path, tmp_path, monkeypatch, request):
    if path.name in USES_MODELS:
        request.applymarker(pytest.mark.model)
    monkeypatch.chdir(REPO)  # recipes use paths relative to the repository root
    data = yaml.safe_load(path.read_text())
    data["output"]["dir"] = str(tmp_path / "run")
    data["cache"] = str(tmp_path / "calls.sqlite")
    if path.name in USES_MODELS and data.get("input"):  # the small model on CPU: the first rows are enough
        rows = (REPO / data["input"]["path"]).read_text(encoding="utf-8").splitlines(keepends=True)[:MODEL_ROWS]
        (tmp_path / "input.jsonl").write_text("".join(rows), encoding="utf-8")
        data["input"]["path"] = str(tmp_path / "input.jsonl")
    manifest = LocalExecutor(parse_recipe(data, str(path)), quiet=True).execute()
    totals = manifest["totals"]
    assert manifest["status"] == "finished"
    assert totals["read"] + totals["generated"] == totals["output"] + totals["rejected"]
    assert 0 < totals["output"] < totals["read"] + totals["generated"]  # something was made or kept, something dropped
    assert Path(manifest["output"]["path"]).exists()


@pytest.mark.model
def test_loop_example_runs_two_rounds(tmp_path, monkeypatch):
    """examples/recipes/loop.yaml as a user runs it: two steered rounds, each trained and evaluated."""
    import json

    from typer.testing import CliRunner

    from dataflywheel.cli import app

    monkeypatch.chdir(REPO)
    data = yaml.safe_load((REPO / "examples" / "recipes" / "loop.yaml").read_text())
    data["cache"] = str(tmp_path / "calls.sqlite")
    # as the other model recipes, smaller than the full example (5.9 min on 2 cores): the first 8 held-out
    # records are two categories, so two synthesis runs a round instead of five; half the training steps
    data["evaluate"]["limit"] = 8
    data["train"]["max_steps"] = 4
    recipe = tmp_path / "loop.yaml"
    recipe.write_text(yaml.safe_dump(data))
    result = CliRunner().invoke(app, ["loop", str(recipe), "--output", str(tmp_path / "loop"), "-q"])
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "loop" / "loop.json").read_text())
    assert manifest["status"] == "finished" and [m["round"] for m in manifest["rounds"]] == [1, 2]
    first, second = manifest["rounds"]
    assert first["curated"] < first["pool"]  # the select steps dropped something
    assert second["carried"] == first["synthesized"]
    assert second["train_set"] == second["curated"] + second["carried"] + second["synthesized"]
    assert len(second["weak_from_last_round"]) == 1 and second["plan"][second["weak_from_last_round"][0]]["weak"]
    assert all(m["train"]["steps"] == data["train"]["max_steps"] for m in manifest["rounds"])
    assert "report:" in result.output and (tmp_path / "loop" / "report.html").exists()
