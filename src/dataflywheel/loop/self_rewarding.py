"""Self-Rewarding iterations (Yuan et al., 2024): the model makes its own preference data, then trains on it.

Iteration t (M0 = the base model): M_{t-1} samples ``samples`` answers per prompt and judges them with the
additive 5-point rubric (``synth.preference_pairs``: judge samples averaged, best vs worst with a minimum margin);
DPO trains a new LoRA adapter on those pairs on top of M_{t-1} (its earlier adapters merged, so the DPO reference
is M_{t-1}); M_t = M_{t-1} + that adapter is the next iteration's generator and judge.

Everything lands in ``out_dir``: per iteration ``iteration_<t>/data`` (a normal run directory: pairs, rejects,
manifest, report), ``iteration_<t>/train`` (adapter, training log) and ``iteration_<t>/metrics.json``; a
finished iteration is not redone (kill and run again to resume; a killed data run resumes by step). Model calls
go through one call cache, ``out_dir/calls.sqlite``."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from dataflywheel.pipeline import LocalExecutor, parse_recipe
from dataflywheel.pipeline.run_dir import iter_checkpoint
from dataflywheel.train.fit import TrainConfig, train


class SelfRewardingConfig(BaseModel):
    """The paper's defaults: N = 4 samples at temperature 0.7, top_p 0.9; each judged 3 times."""

    model_config = ConfigDict(extra="forbid")

    model: str = "smollm2"
    """The base model M0 (transformers backend: bundled name or a local model dir)."""
    iterations: int = Field(default=2, ge=1)
    samples: int = Field(default=4, ge=2)
    temperature: float = Field(default=0.7, gt=0.0)
    top_p: float = Field(default=0.9, gt=0.0, le=1.0)
    max_tokens: int = Field(default=256, ge=1)
    judge_samples: int = Field(default=3, ge=1)
    judge_max_tokens: int = Field(default=256, ge=8)
    judge_method: Literal["generate", "expected"] = "generate"
    """generate: the paper's (a justification ending in "Score: N", judge_samples averaged); expected: one pass,
    the expected score over the scale tokens' probabilities (for a small judge that rarely writes a score)."""
    judge_min_mass: float = Field(default=0.5, ge=0.0, le=1.0)
    min_margin: float = Field(default=0.5, gt=0.0)
    train: TrainConfig = Field(default_factory=lambda: TrainConfig(method="dpo"))
    seed: int = 0


def _spec(config: SelfRewardingConfig, adapters: list[str]) -> dict:
    options = {"adapter": list(adapters)} if adapters else {}
    return {"backend": "transformers", "model": config.model, "options": options}


def _data_recipe(config: SelfRewardingConfig, prompts: Path, out: Path, adapters: list[str], t: int) -> dict:
    model = _spec(config, adapters)
    return {"input": {"path": str(prompts)}, "output": {"dir": str(out / f"iteration_{t}" / "data")},
            "seed": config.seed + t, "cache": str(out / "calls.sqlite"),
            "models": {"default": model, "judge": model},
            "steps": [{"op": "synth.preference_pairs", "samples": config.samples, "temperature": config.temperature,
                       "top_p": config.top_p, "max_tokens": config.max_tokens, "min_margin": config.min_margin,
                       "judge_samples": config.judge_samples, "judge_max_tokens": config.judge_max_tokens,
                       "judge_method": config.judge_method, "judge_min_mass": config.judge_min_mass}]}


def _mean(values: list[float]) -> float | None:
    values = [v for v in values if v is not None and not math.isnan(v)]
    return round(sum(values) / len(values), 4) if values else None


def self_rewarding(prompts: str | Path, out_dir: str | Path, config: SelfRewardingConfig | None = None, *,
                   quiet: bool = False) -> list[dict]:
    """Run the iterations not yet finished; return every iteration's metrics."""
    config = config or SelfRewardingConfig()
    prompts, out = Path(prompts), Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    adapters: list[str] = []
    history = []
    for t in range(1, config.iterations + 1):
        folder = out / f"iteration_{t}"
        metrics_path = folder / "metrics.json"
        if metrics_path.exists():
            metrics = json.loads(metrics_path.read_text())
            adapters.append(metrics["adapter"])
            history.append(metrics)
            continue
        recipe = parse_recipe(_data_recipe(config, prompts, out, adapters, t))
        data_dir = folder / "data"
        manifest = LocalExecutor(recipe, quiet=quiet).execute(resume=(data_dir / "manifest.json").exists())
        pairs = [r for batch in iter_checkpoint(Path(manifest["steps"][-1]["checkpoint"])) for r in batch]
        if not pairs:
            raise RuntimeError(f"iteration {t}: no prompt gave a pair with a judge margin of {config.min_margin:g}; "
                               f"see the rejects in {data_dir / 'rejected'} (more samples or prompts may help)")
        trained = train(pairs, folder / "train", config.train.model_copy(
            update={"method": "dpo", "model": config.model, "base_adapters": list(adapters)}), quiet=quiet)
        metrics = {"iteration": t, "generator": _spec(config, adapters), "prompts": manifest["totals"]["read"],
                   "pairs": len(pairs),
                   "chosen_score": _mean([p["scores"].get("preference.chosen") for p in pairs]),
                   "rejected_score": _mean([p["scores"].get("preference.rejected") for p in pairs]),
                   "margin": _mean([p["scores"].get("preference.margin") for p in pairs]),
                   "train_loss": trained["train_loss"], "steps": trained["steps"], "adapter": trained["adapter"],
                   "data": str(data_dir)}
        metrics_path.write_text(json.dumps(metrics, indent=1))
        adapters.append(trained["adapter"])
        history.append(metrics)
    (out / "iterations.json").write_text(json.dumps(history, indent=1))
    return history
