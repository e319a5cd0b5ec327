"""Recipes: YAML naming the input, the output, the models and the ordered steps.

The whole recipe is validated before any work starts; every problem is reported in one RecipeError
that names the step and the field.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Iterator, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from dataflywheel.io import FILE_TYPES, FORMATS, PREFERENCE_CHOICES, READ_FORMATS
from dataflywheel.io.fields import check_fields
from dataflywheel.io.files import detect_file_type_for_writing
from dataflywheel.records import RecordError
from dataflywheel.models.registry import ModelSpec
from dataflywheel.ops.base import Operator
from dataflywheel.ops.registry import get_operator, load_plugins


class RecipeError(ValueError):
    """A recipe that cannot run; the message names the step and the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class InputSpec(_Strict):
    path: str
    format: Literal[("auto",) + READ_FORMATS] = "auto"
    file_type: Literal[("auto",) + FILE_TYPES] = "auto"
    fields: dict[str, str] = Field(default_factory=dict)
    """The dataset's own field names by reader name, e.g. {prompt: question, response: answer}; a source may be
    a path into nested values (choices.0.turns.0)."""

    @field_validator("fields")
    @classmethod
    def _known_fields(cls, value: dict[str, str]) -> dict[str, str]:
        return check_fields(value)

    def read(self) -> Iterator:
        """The records and unreadable rows (``ReadReject``) of this input."""
        from dataflywheel.io import read_records

        return read_records(self.path, None if self.format == "auto" else self.format,
                            None if self.file_type == "auto" else self.file_type, self.fields)


class OutputSpec(_Strict):
    dir: str = "runs/run"
    file: str = "output.jsonl"
    """Output file in the run directory (a relative name: no absolute path, no '..'; ``dir`` says where the run
    goes); its suffix picks the container (.jsonl[.gz], .json[.gz], .parquet, .csv[.gz]; no suffix: a Hugging Face
    dataset directory)."""
    format: Literal[("auto",) + FORMATS] = "auto"
    with_scores: bool = True
    with_meta: bool = True
    with_id: bool = True
    with_lineage: bool = True
    for_training: bool = False
    """Write only what trainers read: no id, scores, lineage or meta (overrides the with_* switches)."""
    preference: Literal[PREFERENCE_CHOICES] | None = None
    """Write preference pairs to a one-answer format as SFT records: the chosen answer, or both (two records
    labelled true and false). Without it such a format refuses a pair."""

    @field_validator("file")
    @classmethod
    def _known_container(cls, value: str) -> str:
        path = Path(value)
        if path.is_absolute() or ".." in path.parts or not path.parts:
            raise ValueError(f"{value!r} is not a file inside the run directory: give a relative name such as "
                             "output.jsonl, and choose where the run goes with output.dir (or --output)")
        try:
            detect_file_type_for_writing(Path(value))
        except RecordError as err:
            raise ValueError(str(err)) from err
        return value

    def write_options(self) -> dict:
        """Keyword arguments of ``write_records``: what each output row carries besides the text."""
        kind = {"preference": self.preference} if self.preference else {}
        if self.for_training:
            return {"with_meta": False, "with_id": False, "with_scores": False, "with_lineage": False, **kind}
        return {"with_meta": self.with_meta, "with_id": self.with_id, "with_scores": self.with_scores,
                "with_lineage": self.with_lineage, **kind}


class BudgetSpec(_Strict):
    tokens: int | None = Field(default=None, ge=1)
    """Prompt + completion tokens of fresh model calls (cache hits are free)."""
    cost: float | None = Field(default=None, gt=0)
    """Money, in the unit of the models' ``price`` (per 1k prompt / completion tokens)."""


class RaySpec(_Strict):
    """Where and how the Ray engine runs (``executor: ray``; install ``dataflywheel[ray]``)."""

    address: str | None = None
    """An existing cluster: 'auto' (the one this machine belongs to) or 'ray://<head>:10001'; none starts a
    local one."""
    actors: int | None = Field(default=None, ge=1)
    """Workers per model-backed step (each loads the models once); default: the cluster's CPUs, at most 4."""
    gpus: float = Field(default=0.0, ge=0.0)
    """GPUs each model-backed worker asks for."""
    cache: Literal["shared", "merge"] = "shared"
    """Model-call cache on the workers: 'shared' opens the recipe's cache file (one machine, or a shared file
    system); 'merge' gives each worker its own cache on its node and merges what it wrote into the run's at the
    end of each step."""
    read_on: Literal["workers", "driver"] = "workers"
    """Who reads the input: 'workers' read its shards in tasks (every node must see the input at the same path:
    a shared file system); 'driver' reads it alone (the input need only be on the driver)."""


class StepSpec(_Strict):
    op: str
    name: str
    config: dict[str, Any] = Field(default_factory=dict)


class Recipe(_Strict):
    input: InputSpec | None = None
    """What to read; may be omitted when the first step is a source generator (or data is given from Python)."""
    output: OutputSpec = Field(default_factory=OutputSpec)
    plugins: list[str] = Field(default_factory=list)
    seed: int = 0
    batch_size: int = Field(default=256, ge=1)
    workers: int | None = Field(default=None, ge=1)
    """Processes for CPU-bound batch operators (heuristic filters, language id, MinHash signing); default one
    per core, 1 runs everything in this process. Outputs are the same for any number."""
    models: dict[str, ModelSpec] = Field(default_factory=dict)
    cache: str | None = None
    """Model-call cache file (default: the user cache, ~/.cache/dataflywheel/calls.sqlite); 'off' disables it."""

    @field_validator("cache", mode="before")
    @classmethod
    def _cache_off(cls, value: Any) -> Any:
        return "off" if value is False else value  # YAML reads a bare `off` as false
    executor: Literal["local", "ray"] = "local"
    """Engine: 'local' (this machine's processes) or 'ray' (Ray Data on a cluster; see docs/scaling.md)."""
    ray: RaySpec = Field(default_factory=RaySpec)
    max_budget: BudgetSpec | None = None
    """Stop the run cleanly once fresh model calls have spent this much; raise it and ``--resume``."""
    steps: list[StepSpec] = Field(default_factory=list)

    def fingerprint(self) -> str:
        """Hash of what decides the output (not the output location, the budget, the workers or the engine), to
        refuse resuming a changed recipe."""
        decisive = self.model_dump(exclude={"output": {"dir"}, "max_budget": True, "workers": True,
                                            "executor": True, "ray": True})
        return hashlib.sha256(json.dumps(decisive, sort_keys=True).encode()).hexdigest()[:16]

    def build_operators(self, context) -> list[Operator]:
        ops = []
        for step in self.steps:
            cls = get_operator(step.op)
            ops.append(cls(cls.Config(**step.config), context))
        return ops


def _field_errors(err: ValidationError) -> list[str]:
    out = []
    for item in err.errors():
        where = ".".join(str(p) for p in item["loc"]) or "(config)"
        out.append(f"field '{where}': {item['msg']}")
    return out


def _parse_steps(raw_steps: Any, problems: list[str]) -> list[dict]:
    if not isinstance(raw_steps, list):
        problems.append("'steps' must be a list of {op: NAME, ...config}")
        return []
    steps, names = [], set()
    for number, raw in enumerate(raw_steps, start=1):
        if not isinstance(raw, dict) or "op" not in raw:
            problems.append(f"step {number}: must be a mapping with an 'op' key, got {raw!r}")
            continue
        raw = dict(raw)
        op_name = raw.pop("op")
        if not isinstance(op_name, str):
            problems.append(f"step {number}: 'op' must be an operator name, got {op_name!r}")
            continue
        label = f"step {number} ({op_name})"
        name = str(raw.pop("name", None) or op_name.split(".")[-1])
        if name in names:
            name = f"{name}_{number}"
        names.add(name)
        try:
            cls = get_operator(op_name)
        except KeyError as err:
            problems.append(f"{label}: {err.args[0]}")
            continue
        try:
            cls.Config.model_validate(raw)
        except ValidationError as err:
            problems.extend(f"{label}: {msg}" for msg in _field_errors(err))
            continue
        steps.append({"op": op_name, "name": name, "config": raw})
    return steps


def _starts_with_source(recipe: Recipe) -> bool:
    return bool(recipe.steps) and getattr(get_operator(recipe.steps[0].op), "shape", None) == "source"


def parse_recipe(data: Any, source: str = "recipe", *, allow_no_input: bool = False) -> Recipe:
    """Validate a recipe mapping; raise RecipeError listing every problem.

    ``allow_no_input``: the records come from Python (``dataflywheel.run(recipe, data)``)."""
    if not isinstance(data, dict):
        raise RecipeError(f"{source}: a recipe must be a mapping with input, output and steps")
    problems: list[str] = []
    data = dict(data)
    _load_plugins(data.get("plugins"), source)
    steps = _parse_steps(data.pop("steps", []), problems)
    try:
        recipe = Recipe.model_validate({**data, "steps": steps})
    except ValidationError as err:
        problems.extend(f"recipe: {msg}" for msg in _field_errors(err))
        recipe = None
    if recipe is not None and recipe.input is None and not allow_no_input and not _starts_with_source(recipe):
        problems.append("recipe: 'input' is missing (only a recipe whose first step is a source generator, "
                        "such as one that needs no data, may omit it)")
    if not problems and recipe is not None:
        problems.extend(_score_problems(recipe))
    if problems:
        raise RecipeError(f"{source}: " + ("\n  ".join([""] + problems) if len(problems) > 1 else problems[0]))
    return recipe


def _load_plugins(plugins: Any, source: str) -> None:
    """Import the modules a recipe lists (and only those); a plugin that fails to import is named."""
    if plugins is None:
        return
    if not isinstance(plugins, list) or not all(isinstance(p, str) and p.strip() for p in plugins):
        raise RecipeError(f"{source}: 'plugins' must be a list of module names, got {plugins!r}")
    for module in plugins:
        try:
            load_plugins([module])
        except Exception as err:  # anything a user's module raises while imported: named, with its cause chained
            raise RecipeError(f"{source}: cannot import plugin {module!r}: {type(err).__name__}: {err}") from err


PEEK = 1000
"""Records of the input looked at for scores it already carries (a run's output read back)."""


def _score_problems(recipe: Recipe) -> list[str]:
    """Steps that rank or filter by a score no earlier step writes and the input's first records lack."""
    from dataflywheel.ops.base import OpContext
    from dataflywheel.ops.select.score_check import missing_score_message

    context = OpContext(models=_NoModels())
    written: set[str] | None = set()  # None: an earlier step may write any score
    wanted = []
    for number, spec in enumerate(recipe.steps, start=1):
        op = get_operator(spec.op)(get_operator(spec.op).Config(**spec.config), context)
        if written is not None:
            wanted += [(number, spec, name) for name in op.reads_scores() if name not in written]
            more = op.writes_scores()
            written = None if more is None else written | set(more)
    if not wanted:
        return []
    carried = _input_scores(recipe)
    if carried is None:  # records from Python, or an input that cannot be read: checked at run time
        return []
    return [f"step {number} ({spec.op}): " + missing_score_message(spec.name, name).split(": ", 1)[1]
            + f" (no earlier step writes it and the input's first {PEEK} records lack it)"
            for number, spec, name in wanted if name not in carried]


class _NoModels:
    """Models are not needed to say which scores a step reads or writes."""


def _input_scores(recipe: Recipe) -> set[str] | None:
    """Score names on the input's first records; None when there is no input file to look at."""
    from itertools import islice

    from dataflywheel.io import ReadReject

    spec = recipe.input
    if spec is None or not Path(spec.path).exists():
        return None
    try:
        records = islice(spec.read(), PEEK)
        return {name for r in records if not isinstance(r, ReadReject) for name in r.get("scores", {})}
    except (OSError, ValueError):  # unreadable input: the run reports it, naming the file
        return None


def read_yaml(path: str | Path) -> Any:
    """The data of a YAML recipe file (``yaml.safe_load``: no tag can build a Python object)."""
    path = Path(path)
    if not path.exists():
        raise RecipeError(f"recipe not found: {path}")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise RecipeError(f"{path}: invalid YAML: {err}") from err


def load_recipe(path: str | Path, *, allow_no_input: bool = False) -> Recipe:
    """Read and validate a YAML recipe file."""
    return parse_recipe(read_yaml(path), str(path), allow_no_input=allow_no_input)
