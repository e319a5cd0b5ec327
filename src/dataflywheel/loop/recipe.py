"""Loop recipes: the data, the models, the four data stages, training, evaluation and steering of `flywheel loop`.

A loop recipe is a run recipe whose ``steps`` are split by stage (``select``, ``enhance``, ``synthesize``,
``distill``: each a list of steps, any may be empty), plus ``train`` (``flywheel train``'s settings),
``evaluate`` (the held-out set), ``steer`` (how the evaluation's weakest categories get more synthesis) and
``loop`` (rounds and stopping). Every problem is reported at once, naming the stage, the step and the field.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from dataflywheel.pipeline.recipe import InputSpec, RecipeError, parse_recipe, read_yaml
from dataflywheel.train.fit import TrainConfig

STAGES = ("select", "enhance", "synthesize", "distill")
"""The data stages of a round, in order; then train and evaluate."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EvaluateSpec(_Strict):
    heldout: InputSpec
    """Held-out instructions with reference answers (never trained on); their categories are what steering sees."""
    limit: int | None = Field(default=None, ge=1)
    """Only the first N held-out records."""
    max_answer_tokens: int | None = Field(default=None, ge=1)
    """Score only the first N tokens of each reference answer (faster on a CPU; every round the same)."""


class SteerSpec(_Strict):
    """Where the next round synthesizes: each category gets ``seeds`` seed records and the synthesize steps'
    ``target`` (or ``target`` here); the ``weakest`` categories of the last evaluation (highest held-out
    reference loss) get both times ``boost``."""

    category: str | None = "category"
    """The ``meta`` field holding a record's category (e.g. ``dataset``); records without it are 'other'."""
    clusters: int | None = Field(default=None, ge=2)
    """Instead of a meta field: k-means clusters of the held-out prompts' embeddings (role ``embedder``); every
    record belongs to the cluster of its nearest centroid."""
    weakest: int = Field(default=1, ge=1)
    boost: float = Field(default=2.0, ge=1.0)
    seeds: int = Field(default=4, ge=1)
    """Seed records per category and round (before the boost), drawn from that category's curated records."""
    target: int | None = Field(default=None, ge=1)
    """New records per category and round (before the boost); default: each synthesize step's own ``target``."""

    @model_validator(mode="after")
    def _one_source(self) -> "SteerSpec":
        if self.clusters is not None:
            self.category = None
        elif not self.category:
            raise ValueError("name the categories: a meta field (category: FIELD) or embedding clusters (clusters: K)")
        return self


class LoopSpec(_Strict):
    rounds: int = Field(default=2, ge=1)
    """Round budget."""
    patience: int = Field(default=1, ge=1)
    """Stop after this many rounds in a row whose held-out loss fell by less than ``min_improvement``."""
    min_improvement: float = Field(default=0.0, ge=0.0)
    trained_roles: list[str] = Field(default_factory=list)
    """Model roles (transformers backend) that use the last round's adapter in the next round: the trained model
    makes the next round's data."""


class LoopOutput(_Strict):
    dir: str = "runs/loop"
    """The loop directory: loop.json, report.html and one round_<r>/ per round (each stage a run directory)."""


class LoopRecipe(_Strict):
    input: InputSpec
    """The pool of round 1; later rounds add what earlier rounds synthesized."""
    output: LoopOutput = Field(default_factory=LoopOutput)
    seed: int = 0
    batch_size: int = Field(default=256, ge=1)
    models: dict[str, Any] = Field(default_factory=dict)
    cache: str | None = None
    plugins: list[str] = Field(default_factory=list)
    select: list[dict] = Field(default_factory=list)
    enhance: list[dict] = Field(default_factory=list)
    synthesize: list[dict] = Field(default_factory=list)
    distill: list[dict] = Field(default_factory=list)
    train: TrainConfig = Field(default_factory=TrainConfig)
    evaluate: EvaluateSpec
    steer: SteerSpec = Field(default_factory=SteerSpec)
    loop: LoopSpec = Field(default_factory=LoopSpec)

    @property
    def out_dir(self) -> Path:
        return Path(self.output.dir)

    def fingerprint(self) -> str:
        """Hash of what decides the result (not the output location, nor the round budget: a finished loop can be
        resumed with more rounds)."""
        decisive = self.model_dump(exclude={"output": True, "loop": {"rounds"}})
        return hashlib.sha256(json.dumps(decisive, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def stage_recipe(self, steps: list[dict], input_spec: dict, run_dir: str | Path,
                     models: dict | None = None) -> dict:
        """The run recipe (a mapping for ``parse_recipe``) of one stage of a round."""
        data = {"input": input_spec, "output": {"dir": str(run_dir)}, "seed": self.seed,
                "batch_size": self.batch_size, "models": self.models if models is None else models,
                "plugins": self.plugins, "steps": steps}
        if self.cache is not None:
            data["cache"] = self.cache
        return data


def _generator_problems(steps: list[dict]) -> list[str]:
    from dataflywheel.ops.base import Generator, PoolGenerator, SourceGenerator
    from dataflywheel.ops.registry import get_operator

    problems = []
    for number, step in enumerate(steps, start=1):
        try:
            cls = get_operator(step.get("op", ""))
        except KeyError:
            continue  # named by the stage's own check
        if not issubclass(cls, (Generator, PoolGenerator, SourceGenerator)):
            problems.append(f"synthesize step {number} ({step['op']}): a {cls.kind}, not a generator (put it under "
                            "select, enhance or distill)")
    return problems


def _trained_role_problems(recipe: LoopRecipe) -> list[str]:
    """A role that takes the trained adapter must be the trained model, run by the transformers backend."""
    problems = []
    for role in recipe.loop.trained_roles:
        spec = recipe.models.get(role) or {"backend": "transformers", "model": recipe.train.model}
        if spec.get("backend", "transformers") != "transformers" or spec.get("model", "smollm2") != recipe.train.model:
            problems.append(f"loop.trained_roles: role {role!r} is {spec.get('backend', 'transformers')}:"
                            f"{spec.get('model', 'smollm2')}, but the adapter is trained on transformers:"
                            f"{recipe.train.model} (give the role that model, or leave it out of trained_roles)")
    return problems


def parse_loop_recipe(data: Any, source: str = "loop recipe") -> LoopRecipe:
    """Validate a loop recipe mapping; raise RecipeError listing every problem (stage, step and field)."""
    if not isinstance(data, dict):
        raise RecipeError(f"{source}: a loop recipe must be a mapping with input, the stages, train and evaluate")
    problems: list[str] = []
    if "steps" in data:
        problems.append("'steps' is a run recipe's: a loop recipe lists its steps under select, enhance, "
                        "synthesize and distill")
    try:
        recipe = LoopRecipe.model_validate({k: v for k, v in data.items() if k != "steps"})
    except ValidationError as err:
        problems += [f"field '{'.'.join(str(p) for p in e['loc'])}': {e['msg']}" for e in err.errors()]
        recipe = None
    if recipe is not None:
        for stage in STAGES:
            steps = getattr(recipe, stage)
            try:
                parse_recipe(recipe.stage_recipe(steps, recipe.input.model_dump(), "runs/check"), stage)
            except RecipeError as err:
                problems.append(str(err))
            if stage == "synthesize":
                problems += _generator_problems(steps)
        if not any(getattr(recipe, stage) for stage in STAGES):
            problems.append("no steps: give at least one step under select, enhance, synthesize or distill")
        problems += _trained_role_problems(recipe)
        if not Path(recipe.evaluate.heldout.path).exists():
            problems.append(f"evaluate.heldout: file not found: {recipe.evaluate.heldout.path}")
    if problems:
        raise RecipeError(f"{source}: " + ("\n  ".join([""] + problems) if len(problems) > 1 else problems[0]))
    return recipe


def load_loop_recipe(path: str | Path) -> LoopRecipe:
    """Read and validate a loop recipe YAML file."""
    return parse_loop_recipe(read_yaml(path), str(path))
