import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
EXAMPLE_DATA = REPO / "examples" / "data" / "alpaca_eval_sample.jsonl"


def write_jsonl(path: Path, rows: list) -> Path:
    with open(path, "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write((row if isinstance(row, str) else json.dumps(row, ensure_ascii=False)) + "\n")
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def shared_data(relative: str) -> Path:
    path = SHARED_DATA / relative
    if not path.exists():
        pytest.skip(f"shared data missing: {path} (the tests expect ../shared/data beside the repository)")
    return path


def run_steps(tmp_path: Path, steps: list[dict], rows: list | None = None, **recipe):
    """Run ``steps`` (over ``rows`` when given) with a call cache in ``tmp_path``, seed 0, no report:
    (executor, manifest, output rows, rejects)."""
    from dataflywheel.pipeline import LocalExecutor, parse_recipe
    from dataflywheel.pipeline.run_dir import iter_rejects

    data = {"output": {"dir": str(tmp_path / "run")}, "steps": steps, "seed": 0,
            "cache": str(tmp_path / "calls.sqlite"), **recipe}
    if rows is not None:
        data["input"] = {"path": str(write_jsonl(tmp_path / "in.jsonl", rows))}
    executor = LocalExecutor(parse_recipe(data), quiet=True)
    manifest = executor.execute(report=False)
    return executor, manifest, read_jsonl(executor.run_dir.root / "output.jsonl"), list(iter_rejects(executor.run_dir))


class OneModel:
    """A model registry stand-in that hands every role the same (scripted) LLM; ``roles``: the only roles an
    operator may ask for."""

    def __init__(self, llm, roles: tuple[str, ...] | None = None):
        self.model, self.roles = llm, roles

    def llm(self, role):
        assert self.roles is None or role in self.roles, role
        return self.model
