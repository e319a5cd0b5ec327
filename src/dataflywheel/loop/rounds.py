"""`flywheel loop`: rounds of select -> enhance -> synthesize -> distill -> train -> evaluate, each steered by the
last evaluation.

A round, in ``<out>/round_<r>/``:

1. ``curate/``: one run of the select and enhance steps over the recipe's input (again each round: with
   ``trained_roles`` the trained model takes part in selecting).
2. ``synthesize/<category>/``: per held-out category, one run of the synthesize steps over ``seeds`` curated
   records of that category (``<category>.seeds.jsonl``) with its synthesis ``target``; the last evaluation's
   weakest categories get ``boost`` times both (``loop/steering.py``). New records carry the category and
   ``meta.loop_round`` (``synthesized.jsonl``); they join the training set of this round and every later one.
3. ``distill/``: one run of the distill steps over curated + synthesized (this round's and the earlier rounds');
   the result is ``train_set.jsonl``.
4. ``train/``: a LoRA adapter trained on the train set from the base model (`flywheel train`'s settings: equal
   steps every round).
5. ``eval.json``: the adapter's reference-answer loss on the held-out set, overall and per category
   (``baseline.json``: the base model's, round 0).

``metrics.json`` closes a round; ``loop.json`` (the loop's manifest) holds every round's metrics and why the loop
stopped; ``report.html`` charts the rounds. Every stage is resumable: a killed loop run again with ``--resume``
skips finished rounds and stages, resumes a stage's run by step, and finishes with the same result.
"""

from __future__ import annotations

import json
import shutil
import time
from collections import Counter
from pathlib import Path

from rich.console import Console

from dataflywheel.io import read_all, write_records
from dataflywheel.loop import steering
from dataflywheel.loop.recipe import LoopRecipe
from dataflywheel.pipeline import LocalExecutor, parse_recipe
from dataflywheel.pipeline.run_dir import RunDir
from dataflywheel.records import instruction_text

MANIFEST = "loop.json"


class LoopError(RuntimeError):
    """A loop that cannot go on; the message names the round and the stage."""


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _write_json(path: Path, value) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(value, indent=1))
    tmp.replace(path)


def _write(records: list[dict], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_records(records, path, with_id=True, with_scores=True, with_lineage=True)
    return path


def _read(path: str | Path, what: str) -> list[dict]:
    records, unreadable = read_all(path)
    if unreadable:
        raise LoopError(f"{what}: {len(unreadable)} unreadable rows in {path} (first: {unreadable[0].reason})")
    return records


def _input_records(spec, what: str) -> list[dict]:
    """Every record of an input spec; a row that cannot be read is an error naming it (nothing dropped)."""
    items = list(spec.read())
    bad = [item for item in items if not isinstance(item, dict)]
    if bad:
        raise LoopError(f"{what}: {len(bad)} unreadable rows in {spec.path} (first: {bad[0].reason}, "
                        f"{bad[0].source})")
    return items


def _steered(steps: list[dict], target: int) -> list[dict]:
    """The synthesize steps with the category's target, and only new records in their output."""
    from dataflywheel.ops.registry import get_operator

    out = []
    for step in steps:
        fields = get_operator(step["op"]).Config.model_fields
        step = dict(step)
        if "target" in fields:
            step["target"] = target
        if "keep_inputs" in fields:
            step["keep_inputs"] = False
        out.append(step)
    return out


class _Stopwatch:
    """Seconds per stage of a round, and a line on the console when each starts."""

    def __init__(self, say):
        self.say, self.seconds = say, {}
        self._name, self._started = None, 0.0

    def stage(self, name: str, line: str) -> None:
        self.stop()
        self._name, self._started = name, time.perf_counter()
        self.say(line)

    def stop(self) -> dict[str, float]:
        if self._name:
            self.seconds[self._name] = round(time.perf_counter() - self._started, 2)
            self._name = None
        return self.seconds


class Flywheel:
    """Runs the rounds of a loop recipe in ``out_dir`` (default: the recipe's ``output.dir``)."""

    def __init__(self, recipe: LoopRecipe, out_dir: str | Path | None = None, *, quiet: bool = False):
        self.recipe = recipe
        self.out = Path(out_dir or recipe.out_dir)
        self.quiet = quiet
        self.console = Console(stderr=True, quiet=quiet, highlight=False)
        self.manifest: dict = {}
        self._heldout: list[dict] | None = None
        self._heldout_cats: list[str] | None = None
        self._centroids = None
        self._embedding_models = None

    # ---- the loop --------------------------------------------------------------------------------

    def run(self, *, resume: bool = False, force: bool = False) -> dict:
        """Run the rounds not yet finished; return the loop's manifest."""
        self._start(resume, force)
        try:
            self._rounds()
        except BaseException as err:
            self.manifest.update(status="failed" if not isinstance(err, KeyboardInterrupt) else "stopped",
                                 error=f"{type(err).__name__}: {err}")
            self._save()
            raise
        self.manifest.update(status="finished", finished=_now())
        self.manifest["report"] = str(self._report())
        self._save()
        return self.manifest

    def _start(self, resume: bool, force: bool) -> None:
        path = self.out / MANIFEST
        existing = json.loads(path.read_text()) if path.exists() else None
        if existing and resume:
            if existing["fingerprint"] != self.recipe.fingerprint():
                raise LoopError(f"{self.out} holds a loop of a different recipe; resume needs the same recipe "
                                "(or run with --force, or into a new --output)")
            existing.pop("error", None)
            self.manifest = {**existing, "status": "running", "resumed": existing.get("resumed", 0) + 1}
        elif existing and not force:
            raise LoopError(f"{self.out} already holds a loop; pass --resume to continue it, --force to start over, "
                            "or --output for a new directory")
        else:
            if existing:  # --force: remove what an earlier loop made here, nothing else
                for old in [*self.out.glob("round_*"), self.out / "baseline.json", self.out / "report.html"]:
                    shutil.rmtree(old) if old.is_dir() else old.unlink(missing_ok=True)
            self.manifest = {"status": "running", "started": _now(), "fingerprint": self.recipe.fingerprint(),
                             "recipe": self.recipe.model_dump(mode="json"), "rounds": []}
        self.out.mkdir(parents=True, exist_ok=True)
        self._save()

    def _save(self) -> None:
        _write_json(self.out / MANIFEST, self.manifest)

    def _rounds(self) -> None:
        spec = self.recipe.loop
        baseline = self._baseline()
        self.manifest["baseline"] = baseline
        history: list[dict] = []
        for number in range(1, spec.rounds + 1):
            metrics = self._round(number, history)
            history.append(metrics)
            self.manifest["rounds"] = history
            self._save()
            self._report()
            stop = self._stop_reason(baseline, history)
            if stop:
                self.manifest["stopped"] = stop
                return
        self.manifest["stopped"] = f"round budget ({spec.rounds}) spent"

    def _stop_reason(self, baseline: dict, history: list[dict]) -> str | None:
        spec = self.recipe.loop
        losses = [baseline["loss"]] + [m["heldout"]["loss"] for m in history]
        gains = [before - after for before, after in zip(losses, losses[1:])]
        recent = gains[-spec.patience:]
        if len(history) < spec.rounds and len(recent) == spec.patience and all(g < spec.min_improvement
                                                                                 for g in recent):
            return (f"held-out loss improved by less than {spec.min_improvement:g} for {spec.patience} round(s) "
                    f"in a row (last: {gains[-1]:+.4f})")
        return None

    # ---- one round -------------------------------------------------------------------------------

    def _round(self, number: int, history: list[dict]) -> dict:
        folder = self.out / f"round_{number}"
        done = folder / "metrics.json"
        if done.exists():
            return json.loads(done.read_text())
        folder.mkdir(parents=True, exist_ok=True)
        rounds = self.recipe.loop.rounds
        clock = _Stopwatch(lambda what: self.console.print(f"[bold]round {number}/{rounds}[/]: {what}"))
        models = self._models(history)

        clock.stage("curate", "select + enhance")
        curated, manifest = self._stage(number, "curate", self.recipe.select + self.recipe.enhance,
                                        self.recipe.input.model_dump(), folder / "curate", models)
        if manifest is None:  # no select or enhance step: the input as it is
            curated = _input_records(self.recipe.input, "input")
        carried = [r for earlier in range(1, number)
                   for r in _read(self.out / f"round_{earlier}" / "synthesized.jsonl", f"round {earlier}")]

        clock.stage("synthesize", "synthesize (steered)")
        weak = steering.weakest(history[-1]["heldout"]["categories"], self.recipe.steer.weakest) if history else []
        plan, new = self._synthesize(number, folder, curated, weak, models)
        _write(new, folder / "synthesized.jsonl")

        train_set = curated + carried + new
        if self.recipe.distill:
            clock.stage("distill", "distill")
            train_set, _ = self._stage(number, "distill", self.recipe.distill,
                                       {"path": str(_write(train_set, folder / "distill_input.jsonl"))},
                                       folder / "distill", models)
        _write(train_set, folder / "train_set.jsonl")

        clock.stage("train", f"train on {len(train_set)} records")
        trained = self._train(number, folder, train_set)
        clock.stage("evaluate", "evaluate")
        evaluation = self._evaluate(folder / "eval.json", trained["adapter"])
        before = history[-1]["heldout"]["loss"] if history else self.manifest["baseline"]["loss"]
        metrics = {"round": number, "pool": manifest["totals"]["read"] if manifest else len(curated),
                   "curated": len(curated), "carried": len(carried), "synthesized": len(new),
                   "train_set": len(train_set), "weak_from_last_round": weak, "plan": plan,
                   "train": {k: trained[k] for k in ("method", "records", "steps", "train_loss", "adapter")},
                   "heldout": evaluation, "improvement": round(before - evaluation["loss"], 4),
                   "models": models, "seconds": clock.stop()}
        _write_json(done, metrics)
        clock.say(f"held-out loss {evaluation['loss']:.4f} ({metrics['improvement']:+.4f})")
        return metrics

    def _models(self, history: list[dict]) -> dict:
        """The recipe's models, with the last round's adapter on the roles the trained model plays."""
        models = json.loads(json.dumps(self.recipe.models))
        if history:
            for role in self.recipe.loop.trained_roles:
                spec = models.setdefault(role, {"backend": "transformers", "model": self.recipe.train.model})
                spec.setdefault("options", {})["adapter"] = history[-1]["train"]["adapter"]
        return models

    def _stage(self, number: int, name: str, steps: list[dict], input_spec: dict, run_dir: Path,
               models: dict) -> tuple[list[dict], dict | None]:
        """The output records and manifest of one stage's run (resumed, or reused when finished); no manifest
        when the stage has no steps."""
        from dataflywheel.pipeline import RunError

        if not steps:
            return [], None
        recipe = parse_recipe(self.recipe.stage_recipe(steps, input_spec, run_dir, models), f"round {number} {name}")
        existing = RunDir(run_dir).read_manifest()
        if existing and existing.get("status") == "finished" and existing["fingerprint"] == recipe.fingerprint():
            manifest = existing
        else:
            try:
                manifest = LocalExecutor(recipe, quiet=self.quiet).execute(resume=existing is not None)
            except RunError as err:
                raise LoopError(f"round {number}, {name}: {err}") from err
        return _read(manifest["output"]["path"], f"round {number} {name}"), manifest

    def _synthesize(self, number: int, folder: Path, curated: list[dict], weak: list[str],
                    models: dict) -> tuple[dict, list[dict]]:
        steer = self.recipe.steer
        field = self._category_field()
        by_category: dict[str, list[dict]] = {}
        for record, category in zip(curated, self._categories(curated)):
            by_category.setdefault(category, []).append(record)
        categories = sorted(set(self._heldout_categories()))
        target = steer.target or self._synthesis_target()
        plan = steering.plan(categories, {c: len(v) for c, v in by_category.items()}, steer.seeds, target, weak,
                             steer.boost)
        synthesized = []
        for index, category in enumerate(categories):
            entry = plan[category]
            entry["generated"] = 0
            if not self.recipe.synthesize or not entry["seeds"]:
                continue
            name = steering.slug(category, index)
            seeds = steering.draw_seeds(by_category[category], entry["seeds"], self.recipe.seed, number, category)
            seeds_file = _write(seeds, folder / "synthesize" / f"{name}.seeds.jsonl")
            made, _ = self._stage(number, f"synthesize {category}", _steered(self.recipe.synthesize, entry["target"]),
                               {"path": str(seeds_file)}, folder / "synthesize" / name, models)
            seed_ids = {r["id"] for r in seeds}
            made = [r for r in made if r["id"] not in seed_ids]
            for record in made:
                record["meta"].update({field: category, "loop_round": number})
            entry["generated"] = len(made)
            synthesized += made
        return plan, synthesized

    def _synthesis_target(self) -> int:
        from dataflywheel.ops.registry import get_operator

        for step in self.recipe.synthesize:
            cls = get_operator(step["op"])
            if "target" in cls.Config.model_fields:
                return int(step.get("target", cls.Config.model_fields["target"].default))
        return 1

    # ---- categories ------------------------------------------------------------------------------

    def _category_field(self) -> str:
        return self.recipe.steer.category or "loop_cluster"

    def _heldout_records(self) -> list[dict]:
        if self._heldout is None:
            spec = self.recipe.evaluate.heldout
            self._heldout = _input_records(spec, "evaluate.heldout")[:self.recipe.evaluate.limit]
            if not self._heldout:
                raise LoopError(f"evaluate.heldout: no records in {spec.path}")
        return self._heldout

    def _heldout_categories(self) -> list[str]:
        """The held-out records' categories, found once (in cluster mode they cost an embedding pass)."""
        if self._heldout_cats is None:
            self._heldout_cats = self._categories(self._heldout_records())
        return self._heldout_cats

    def _categories(self, records: list[dict]) -> list[str]:
        steer = self.recipe.steer
        if steer.category:
            return [steering.category_of(r, steer.category) for r in records]
        embedder = self._embedder()
        if self._centroids is None:
            from dataflywheel.algorithms.semdedup import kmeans_labels

            heldout = embedder.embed([instruction_text(r) for r in self._heldout_records()])
            _, self._centroids = kmeans_labels(heldout, steer.clusters, self.recipe.seed)
        return steering.nearest_cluster(embedder.embed([instruction_text(r) for r in records]), self._centroids)

    def _embedder(self):
        from dataflywheel.models import CallCache, ModelRegistry

        if self._embedding_models is None:
            cache = None if self.recipe.cache == "off" else CallCache(self.recipe.cache)
            self._embedding_models = ModelRegistry(self.recipe.models, cache, self.quiet)
        return self._embedding_models.embedder()

    # ---- train and evaluate ----------------------------------------------------------------------

    def _train(self, number: int, folder: Path, train_set: list[dict]) -> dict:
        from dataflywheel.train.fit import train

        result_path = folder / "train" / "result.json"
        if result_path.exists():
            return json.loads(result_path.read_text())
        result_path.parent.mkdir(parents=True, exist_ok=True)
        try:
            result = train(train_set, folder / "train", self.recipe.train, quiet=self.quiet)
        except ValueError as err:
            raise LoopError(f"round {number}, train: {err}") from err
        _write_json(result_path, result)
        return result

    def _baseline(self) -> dict:
        return self._evaluate(self.out / "baseline.json", None)

    def _evaluate(self, path: Path, adapter: str | None) -> dict:
        """Reference-answer loss on the held-out set of the base model plus ``adapter``: overall and per category."""
        if path.exists():
            return json.loads(path.read_text())
        from dataflywheel.models import CallCache, ModelRegistry
        from dataflywheel.train.evaluate import reference_loss

        records = self._heldout_records()
        spec = {"backend": "transformers", "model": self.recipe.train.model,
                "options": {"adapter": adapter} if adapter else {}}
        registry = ModelRegistry({"eval": spec}, None if self.recipe.cache == "off" else CallCache(self.recipe.cache),
                                 self.quiet)
        try:
            llm = registry.llm("eval")
            cut = self.recipe.evaluate.max_answer_tokens
            if cut:
                from dataflywheel.ops.score.ifd import truncate
                from dataflywheel.records import prompt_turns, response_text

                records = [{**r, "messages": prompt_turns(r) + [
                    {"role": "assistant", "content": truncate(llm, response_text(r), cut)}]} for r in records]
            loss = reference_loss(llm, records)
        finally:
            registry.close()
        categories = self._heldout_categories()
        result = {"model": spec, "loss": round(loss["reference_loss"], 4), "ci95": [round(v, 4) for v in loss["ci95"]],
                  "n": loss["n"], "categories": steering.category_losses(categories, loss["per_record"]),
                  "per_category_n": dict(sorted(Counter(categories).items()))}
        _write_json(path, result)
        return result

    # ---- report ----------------------------------------------------------------------------------

    def _report(self) -> Path:
        from dataflywheel.report.loop import write_loop_report

        return write_loop_report(self.out, self.manifest)


def run_loop(recipe: LoopRecipe, out_dir: str | Path | None = None, *, resume: bool = False, force: bool = False,
             quiet: bool = False) -> dict:
    """Run a loop recipe; return its manifest (``loop.json``)."""
    return Flywheel(recipe, out_dir, quiet=quiet).run(resume=resume, force=force)
