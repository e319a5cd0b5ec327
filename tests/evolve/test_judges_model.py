"""evolve.judge and evolve.pairwise in a recipe with the bundled SmolLM2 (a weak judge: the test checks that what
it writes is stored and read back consistently, not that its judgements are right)."""

import math

from pathlib import Path

import pytest

from dataflywheel.pipeline.run_dir import iter_checkpoint
from dataflywheel.ops.evolve.rubrics import parse_rating
from tests.conftest import run_steps

ROWS = [{"messages": [{"role": "user", "content": "What is the capital of France?"}],
         "chosen": {"role": "assistant", "content": "The capital of France is Paris."},
         "rejected": {"role": "assistant", "content": "I like turtles."}},
        {"messages": [{"role": "user", "content": "Add 2 and 3."}],
         "chosen": {"role": "assistant", "content": "2 + 3 = 5."},
         "rejected": {"role": "assistant", "content": "2 + 3 = 7."}}]


@pytest.mark.model
def test_judges_run_in_a_recipe_with_the_bundled_model(tmp_path):
    steps = [{"op": "evolve.judge", "rubric": "mt_bench", "max_tokens": 24},
             {"op": "evolve.pairwise", "method": "logprobs"}]
    models = {"judge": {"backend": "transformers", "model": "smollm2", "options": {"threads": 1}}}
    _, manifest, output, rejects = run_steps(tmp_path, steps, ROWS, models=models)
    assert manifest["status"] == "finished" and len(output) == 2 and not rejects
    final = [r for batch in iter_checkpoint(Path(manifest["steps"][-1]["checkpoint"])) for r in batch]
    assert sorted(r["id"] for r in final) == sorted(r["id"] for r in output)
    for record in final:
        entry = record["meta"]["judge"]["mt_bench"]
        [rationale] = entry["rationales"]
        assert rationale.strip() and entry["model"] == "judge"
        read = parse_rating(rationale)
        score = record["scores"]["judge.mt_bench"]
        assert (math.isnan(read) and math.isnan(score) and entry["score"] is None) or score == read == entry["score"]
        note = record["meta"]["pairwise"]
        assert note["method"] == "logprobs" and len(note["orders"]) == 2 and len(note["p_first_shown"]) == 2
        assert all(o in ("A", "B", None) for o in note["orders"])
        first, second = note["orders"]
        expected = None if None in (first, second) else first if first == second else "tie"
        assert note["verdict"] == expected
        assert record["scores"]["judge.pairwise"] == {"A": 1.0, "B": 0.0, "tie": 0.5}[expected] if expected else \
            math.isnan(record["scores"]["judge.pairwise"])
