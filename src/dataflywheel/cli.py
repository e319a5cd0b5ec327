"""The ``flywheel`` command line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from dataflywheel.io import FORMATS, PREFERENCE_CHOICES, READ_FORMATS
from dataflywheel.io.files import WRITE_TYPES
from dataflywheel.io.layouts import LAYOUTS

app = typer.Typer(help="dataflywheel: select, enhance, synthesize, distill and evolve LLM post-training data; `flywheel loop` turns the flywheel.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
out = Console()
err = Console(stderr=True)

USAGE_ERROR = 2
FIELDS_HELP = ("The dataset's field names by reader name, e.g. prompt=question,response=answer (a nested value: "
               "text=choices.0.turns.0).")


def _fields(text: Optional[str]) -> dict:
    from dataflywheel.io import parse_fields

    try:
        return parse_fields(text or "")
    except ValueError as e:
        _fail(str(e))


def _quiet() -> None:
    from dataflywheel.pipeline.progress import silence_library_bars

    silence_library_bars()


def _dataset_path(path: Path) -> Path:
    """A dataset file, or a run directory's output file."""
    manifest = path / "manifest.json"
    return Path(json.loads(manifest.read_text())["output"]["path"]) if manifest.exists() else path


def _read_usable(path: Path, fields: dict) -> list[dict]:
    """The records of a dataset file; unreadable rows are counted on stderr, none at all is an error."""
    from dataflywheel.io import read_all

    records, unreadable = read_all(path, fields=fields)
    if unreadable:
        first = unreadable[0]
        err.print(f"{len(unreadable)} of {len(records) + len(unreadable)} rows of {path} could not be read "
                  f"(first: {first.source}: {first.reason})", highlight=False, markup=False)
    if not records:
        _fail(f"no readable records in {path}", code=1)
    return records


def _fail(message: str, code: int = USAGE_ERROR) -> None:
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


@app.command()
def run(
    recipe: Path = typer.Argument(..., help="Recipe YAML file."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Run directory (default: the recipe's output.dir)."),
    resume: bool = typer.Option(False, "--resume", help="Continue a killed run from its last finished step."),
    force: bool = typer.Option(False, "--force", help="Start over in a run directory that already holds a run."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Estimate model calls and tokens on a sample; send nothing."),
    sample: int = typer.Option(20, "--sample", help="Records the dry run uses (its figures are scaled to the input)."),
    workers: Optional[int] = typer.Option(None, "--workers", min=1,
                                          help="Processes for CPU-bound steps (default: the recipe's, else one per core)."),
    executor_kind: Optional[str] = typer.Option(None, "--executor", metavar="local|ray",
                                                help="Engine (default: the recipe's `executor`, else local)."),
    address: Optional[str] = typer.Option(None, "--address",
                                          help="Ray cluster to run on: 'auto' or 'ray://<head>:10001' (implies ray)."),
) -> None:
    """Run a recipe: read, apply every step, write the output, rejects and manifest."""
    from dataflywheel.errors import FatalError
    from dataflywheel.pipeline import RecipeError, RunError, load_recipe
    from dataflywheel.pipeline.executor_ray import make_executor
    from dataflywheel.pipeline.output import OutputError

    try:
        parsed = load_recipe(recipe)
    except RecipeError as e:
        _fail(str(e))
    if quiet:
        _quiet()
    if dry_run:
        _print_estimate(parsed, sample, quiet)
        return
    if executor_kind not in (None, "local", "ray"):
        _fail(f"--executor must be local or ray, got {executor_kind!r}")
    executor = make_executor(parsed, output, executor=executor_kind, address=address, quiet=quiet, workers=workers)
    try:
        manifest = executor.execute(resume=resume, force=force)
    except RunError as e:  # a writer process that failed (not a refused record) is not the user's to fix
        _fail(str(e), code=1 if isinstance(e, OutputError) and not e.refused else USAGE_ERROR)
    except FatalError as e:
        again = f"flywheel run {recipe}" + (f" --output {output}" if output else "")
        _fail(f"{e}\nthe run stopped; nothing was rejected for it. Once fixed: {again} --resume "
              f"(or, if the fix changed the recipe, {again} --force)", code=1)
    totals = manifest["totals"]
    out.print(f"read {totals['read']}, kept {totals['output']}, rejected {totals['rejected']}"
              + (f", generated {totals['generated']}" if totals["generated"] else ""), highlight=False)
    out.print(f"output:   {manifest['output']['path']}", highlight=False)
    out.print(f"rejected: {executor.run_dir.rejected}", highlight=False)
    out.print(f"manifest: {executor.run_dir.manifest_path}", highlight=False)
    out.print(f"report:   {manifest['report']}", highlight=False)


def _print_estimate(recipe, sample: int, quiet: bool) -> None:
    from dataflywheel.errors import FatalError
    from dataflywheel.pipeline import RunError
    from dataflywheel.pipeline.dry_run import estimate
    from dataflywheel.records import RecordError

    try:
        result = estimate(recipe, sample, quiet=True)
    except (RunError, FatalError, FileNotFoundError, RecordError, ValueError) as e:
        _fail(f"dry run: {e}")
    table = Table(title=f"dry run: {result['sample']} of {result['input_records']} input records, scaled "
                        f"x{result['scale']} (no request sent; completion tokens are an upper bound)")
    for column in ("step", "models", "calls", "cache hits", "prompt tokens", "completion tokens", "cost"):
        table.add_column(column, justify="left" if column in ("step", "models") else "right")
    for step in result["steps"] + [{"name": "total", "models": [], **result["totals"]}]:
        table.add_row(escape(step["name"]), escape(", ".join(step["models"])), f"{step['calls']:.0f}",
                      f"{step['cache_hits']:.0f}", f"{step['prompt_tokens']:.0f}", f"{step['completion_tokens']:.0f}",
                      f"{step['cost']:.4g}")
    out.print(table)


@app.command()
def train(
    data: Path = typer.Argument(..., help="Dataset file or a run directory (its output is used)."),
    output: Path = typer.Option(..., "--output", "-o", help="Where the adapter, training log and config go."),
    method: str = typer.Option("auto", "--method", help="auto (DPO for preference records, else SFT), sft or dpo."),
    model: str = typer.Option("smollm2", "--model", help="Bundled name or a local Hugging Face model dir."),
    epochs: float = typer.Option(1.0, "--epochs"),
    max_steps: int = typer.Option(-1, "--max-steps", help="Stop after this many optimizer steps (-1: all epochs)."),
    learning_rate: float = typer.Option(2e-4, "--lr"),
    batch_size: int = typer.Option(4, "--batch-size"),
    max_length: int = typer.Option(384, "--max-length"),
    lora_rank: int = typer.Option(8, "--lora-rank"),
    seed: int = typer.Option(0, "--seed"),
    fields: Optional[str] = typer.Option(None, "--fields", help=FIELDS_HELP),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars (TRL's and transformers' included)."),
) -> None:
    """LoRA fine-tuning (TRL + PEFT) of a causal LM on a dataset or a run's output."""
    from pydantic import ValidationError

    from dataflywheel.train.fit import TrainConfig
    from dataflywheel.train.fit import train as fit

    data = _dataset_path(data)
    try:
        config = TrainConfig(model=model, method=method, epochs=epochs, max_steps=max_steps,
                             learning_rate=learning_rate, batch_size=batch_size, max_length=max_length,
                             lora_rank=lora_rank, seed=seed)
        result = fit(_read_usable(data, _fields(fields)), output, config, quiet=quiet)
    except (ValidationError, FileNotFoundError, ValueError) as e:
        _fail(str(e))
    typer.echo(json.dumps(result))


@app.command()
def evaluate(
    heldout: Path = typer.Argument(..., help="Held-out records: instructions with reference answers."),
    model: str = typer.Option("smollm2", "--model", help="Model A: bundled name or a Hugging Face model dir."),
    adapter: Optional[str] = typer.Option(None, "--adapter", help="LoRA adapter of model A (from flywheel train)."),
    baseline_model: Optional[str] = typer.Option(None, "--baseline-model", help="Model B (default: model A's base)."),
    baseline_adapter: Optional[str] = typer.Option(None, "--baseline-adapter", help="LoRA adapter of model B."),
    limit: Optional[int] = typer.Option(None, "--limit", help="Only the first N held-out records."),
    max_tokens: int = typer.Option(256, "--max-tokens", help="Answer length for the win-rate comparison."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write the results as JSON here."),
    fields: Optional[str] = typer.Option(None, "--fields", help=FIELDS_HELP),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Reference-answer loss of A and B, and A's pairwise judge win rate over B (both orders, bootstrap CIs).

    The judge is the bundled SmolLM2 unless DATAFLYWHEEL_JUDGE_BASE_URL and DATAFLYWHEEL_JUDGE_MODEL name an
    OpenAI-compatible server (key from OPENAI_API_KEY)."""
    from dataflywheel.models import CallCache, ModelRegistry
    from dataflywheel.train.evaluate import answers, judge_spec_from_env, reference_loss, win_rate

    if quiet:
        _quiet()
    try:
        records = _read_usable(heldout, _fields(fields))[:limit]
    except (FileNotFoundError, ValueError) as e:
        _fail(str(e))
    specs = {"a": {"backend": "transformers", "model": model, "options": {"adapter": adapter} if adapter else {}},
             "b": {"backend": "transformers", "model": baseline_model or model,
                   "options": {"adapter": baseline_adapter} if baseline_adapter else {}}}
    judge = judge_spec_from_env()
    if judge:
        specs["judge"] = judge
    registry = ModelRegistry(specs, CallCache())
    a, b = registry.llm("a"), registry.llm("b")
    loss_a, loss_b = reference_loss(a, records), reference_loss(b, records)
    loss_a.pop("per_record"), loss_b.pop("per_record")
    result = {"records": len(records), "a": {"model": a.name, **loss_a}, "b": {"model": b.name, **loss_b},
              "judge": registry.llm("judge").name}
    result["a_vs_b"] = win_rate(registry.llm("judge"), records, answers(a, records, max_tokens),
                                answers(b, records, max_tokens))
    text = json.dumps(result, indent=2)
    if output:
        output.write_text(text + "\n")
    typer.echo(text)


@app.command("self-reward")
def self_reward(
    prompts: Path = typer.Argument(..., help="Prompts (any readable dataset; only the prompt turns are used)."),
    output: Path = typer.Option(..., "--output", "-o", help="Where each iteration's data, adapter and metrics go."),
    iterations: int = typer.Option(2, "--iterations", min=1, help="Self-Rewarding iterations (M1, M2, ...)."),
    model: str = typer.Option("smollm2", "--model", help="Base model M0: bundled name or a Hugging Face model dir."),
    samples: int = typer.Option(4, "--samples", min=2, help="Answers sampled per prompt (N)."),
    judge_samples: int = typer.Option(3, "--judge-samples", min=1, help="Judgements averaged per answer."),
    max_tokens: int = typer.Option(256, "--max-tokens", help="Answer length."),
    max_steps: int = typer.Option(-1, "--max-steps", help="DPO steps per iteration (-1: one epoch)."),
    seed: int = typer.Option(0, "--seed"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Self-Rewarding iterations: sample answers, judge them with the same model, DPO on best vs worst; repeat.

    The judge uses the additive 5-point rubric; each iteration's model generates and judges the next iteration's
    data. Run it again to continue after a kill (finished iterations are kept)."""
    from dataflywheel.loop.self_rewarding import SelfRewardingConfig, self_rewarding
    from dataflywheel.train.fit import TrainConfig

    if quiet:
        _quiet()
    config = SelfRewardingConfig(model=model, iterations=iterations, samples=samples, judge_samples=judge_samples,
                                 max_tokens=max_tokens, seed=seed, train=TrainConfig(max_steps=max_steps, seed=seed))
    try:
        history = self_rewarding(prompts, output, config, quiet=quiet)
    except (FileNotFoundError, RuntimeError) as e:
        _fail(str(e), code=1)
    typer.echo(json.dumps(history, indent=2))


@app.command()
def loop(
    recipe: Path = typer.Argument(..., help="Loop recipe YAML (stages select, enhance, synthesize, distill; train; evaluate)."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Loop directory (default: the recipe's output.dir)."),
    resume: bool = typer.Option(False, "--resume", help="Continue a killed loop: finished rounds and stages are kept."),
    force: bool = typer.Option(False, "--force", help="Start over in a directory that already holds a loop."),
    rounds: Optional[int] = typer.Option(None, "--rounds", min=1, help="Round budget (default: the recipe's loop.rounds)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """The flywheel: rounds of select -> enhance -> synthesize -> distill -> train -> evaluate.

    Each round trains a LoRA adapter on the round's data and measures its held-out loss per category; the
    weakest categories get more seeds and a larger synthesis target in the next round. Stops on the round
    budget or when the held-out loss stops improving."""
    from dataflywheel.errors import FatalError
    from dataflywheel.loop.recipe import load_loop_recipe
    from dataflywheel.loop.rounds import LoopError, run_loop
    from dataflywheel.pipeline import RecipeError

    try:
        parsed = load_loop_recipe(recipe)
        if rounds is not None:
            parsed = parsed.model_copy(update={"loop": parsed.loop.model_copy(update={"rounds": rounds})})
    except RecipeError as e:
        _fail(str(e))
    if quiet:
        _quiet()
    try:
        manifest = run_loop(parsed, output, resume=resume, force=force, quiet=quiet)
    except LoopError as e:
        _fail(str(e))
    except FatalError as e:
        again = f"flywheel loop {recipe}" + (f" --output {output}" if output else "")
        _fail(f"{e}\nthe loop stopped. Once fixed: {again} --resume", code=1)
    base = manifest["baseline"]["loss"]
    for m in manifest["rounds"]:
        weak = ", ".join(m["weak_from_last_round"]) or "-"
        out.print(f"round {m['round']}: {m['train_set']} records ({m['synthesized']} synthesized, steered at {weak}); "
                  f"held-out loss {m['heldout']['loss']:.4f} (base {base:.4f})", highlight=False, soft_wrap=True)
    out.print(f"stopped:  {manifest['stopped']}", highlight=False)
    out.print(f"manifest: {Path(manifest['report']).with_name('loop.json')}", highlight=False)
    out.print(f"report:   {manifest['report']}", highlight=False)


@app.command()
def report(run_dir: Path = typer.Argument(..., help="A run directory (holds manifest.json).")) -> None:
    """Regenerate a run's self-contained report.html."""
    from dataflywheel.report import write_run_report

    try:
        typer.echo(f"report: {write_run_report(run_dir)}")
    except FileNotFoundError as e:
        _fail(str(e))


@app.command()
def ops(name: Optional[str] = typer.Argument(None, help="Show one operator in full.")) -> None:
    """List every operator with its one-line doc and config fields; NAME shows one in full."""
    from dataflywheel.ops.catalog_view import describe_operator, operator_rows

    if name:
        try:
            out.print(describe_operator(name), highlight=False, markup=False)
        except KeyError as e:
            _fail(e.args[0])
        return
    rows = operator_rows()
    width = max(len(name) for name, *_ in rows) + 1
    for name, kind, summary, config in rows:
        typer.echo(f"{name:<{width}} {kind:<9} {summary}")
        typer.echo(f"{'':<{width}} config: {config or '(none)'}")


@app.command()
def convert(
    source: Path = typer.Argument(..., help="Input file or Hugging Face dataset dir."),
    target: Path = typer.Argument(..., help="Output file (type from the suffix), dataset dir, or a layout's dir."),
    to: str = typer.Option("auto", "--to", help=f"Output: auto (TRL training format), a format "
                           f"({', '.join(FORMATS)}) or a trainer layout ({', '.join(LAYOUTS)}; see docs/formats.md)."),
    from_format: Optional[str] = typer.Option(None, "--from", help="Input format (default: detect)."),
    fields: Optional[str] = typer.Option(None, "--fields", help=FIELDS_HELP),
    preference: Optional[str] = typer.Option(None, "--preference",
                                             help="Write preference pairs as SFT records: chosen (keep the chosen "
                                                  "answer) or both (two records, label true/false)."),
    name: Optional[str] = typer.Option(None, "--name", help="Dataset name in a layout (default: the input's name)."),
    file_type: Optional[str] = typer.Option(None, "--file-type", help=f"Output container: {', '.join(WRITE_TYPES)}."),
    rejects: Optional[Path] = typer.Option(None, "--rejects", help="Where unreadable rows go (default: TARGET.rejects.jsonl)."),
) -> None:
    """Convert a dataset between formats and containers, or into a trainer's layout; unreadable rows go to a
    rejects file. Nothing is written when a record does not fit the output (the error names it)."""
    from dataflywheel.io import ReadReject, read_records, write_records
    from dataflywheel.io.files import write_rows
    from dataflywheel.io.layouts import write_layout
    from dataflywheel.records import RecordError

    if to != "auto" and to not in FORMATS + LAYOUTS:
        _fail(f"unknown output {to!r}; use auto, a format ({', '.join(FORMATS)}) or a layout ({', '.join(LAYOUTS)})")
    if from_format and from_format not in READ_FORMATS:
        _fail(f"unknown format {from_format!r}; use one of {', '.join(READ_FORMATS)}")
    if preference and preference not in PREFERENCE_CHOICES:
        _fail(f"unknown --preference {preference!r}; use one of {', '.join(PREFERENCE_CHOICES)}")
    name = name or source.name.split(".")[0]
    field_map = _fields(fields)
    bad: list[dict] = []

    def good():
        for item in read_records(source, from_format, fields=field_map):
            if isinstance(item, ReadReject):
                bad.append({"source": item.source, "reason": item.reason, "raw": item.raw})
            else:
                yield item
    try:
        if to in LAYOUTS:
            written = write_layout(good(), target, to, name, preference=preference)
            count = written["records"]
            message = (f"wrote {count} {written['kind']} records to {written['data']} and {written['config']}")
        else:
            count = write_records(good(), target, to, file_type, preference=preference)
            message = f"wrote {count} records to {target}" + (" (pairs as two rows)" if preference == "both" else "")
    except (FileNotFoundError, ValueError, RecordError) as e:
        _fail(f"{e}\nnothing was written to {target}")
    if count == 0:  # an empty output would pass for a result: remove it and say why
        shutil.rmtree(target) if target.is_dir() else target.unlink(missing_ok=True)
    else:
        out.print(message, highlight=False)
    if bad:
        beside = target / f"{name}.rejects.jsonl" if to in LAYOUTS else target.with_name(f"{target.name}.rejects.jsonl")
        path = rejects or beside
        path.parent.mkdir(parents=True, exist_ok=True)
        write_rows(bad, path, "jsonl")
        err.print(f"{len(bad)} unreadable rows (with line and reason) in {path}", highlight=False)
    if count == 0:
        _fail(f"nothing usable in {source}: all {len(bad)} rows were unreadable (first, at {bad[0]['source']}: "
              f"{bad[0]['reason']}); nothing was written to {target}" if bad else
              f"{source} holds no records; nothing was written to {target}", code=1)


def _stats_table(stats: dict) -> Table:
    table = Table(show_header=False, box=None)
    for key in ("path", "file_type", "format", "records", "preference_records", "prompt_only_records", "unreadable"):
        table.add_row(key, str(stats[key]))
    shown = list(stats["unreadable_reasons"].items())[:5]
    for reason, count in shown:
        table.add_row("  why", escape(f"{count} x {reason} (first: {stats['unreadable_first'][reason]})"))
    if len(stats["unreadable_reasons"]) > len(shown):
        table.add_row("  why", f"... {len(stats['unreadable_reasons']) - len(shown)} more reasons (--json lists them)")
    for reason, count in stats["rejected_by"].items():
        table.add_row("rejected by", escape(f"{count} x {reason}"))
    for key in ("instruction_words", "response_words"):
        table.add_row(key, "  ".join(f"{k} {v}" for k, v in stats[key].items()))
    for name, summary in stats["scores"].items():
        table.add_row(f"score {escape(name)}", "  ".join(f"{k} {v:.4g}" for k, v in summary.items()))
    if stats["fields"]:
        table.add_row("other fields", escape(", ".join(stats["fields"])))
    return table


@app.command()
def inspect(
    path: Path = typer.Argument(..., help="Dataset file, dataset dir, a run directory or its rejected/ files."),
    fmt: Optional[str] = typer.Option(None, "--format", help="Input format (default: detect)."),
    fields: Optional[str] = typer.Option(None, "--fields", help=FIELDS_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    html: Optional[Path] = typer.Option(None, "--html", help="Also write an HTML page with charts and a record browser."),
) -> None:
    """Counts, formats, length statistics and score columns of a dataset, and why rows are unreadable (exit
    status 1 when no row is readable)."""
    from dataflywheel.inspect_data import dataset_stats
    from dataflywheel.records import RecordError

    path = _dataset_path(path)
    try:
        stats = dataset_stats(path, fmt, fields=_fields(fields))
    except (FileNotFoundError, ValueError, RecordError) as e:
        _fail(str(e))
    if html:
        from dataflywheel.report import write_dataset_report

        err.print(f"html: {write_dataset_report(path, html, stats)}", highlight=False)
    if as_json:
        out.print_json(data=stats)
    else:
        out.print(_stats_table(stats))
    if not stats["records"]:
        _fail(f"no readable records in {path}" + (" (the reasons are above)" if stats["unreadable"] else ""), code=1)


cache_app = typer.Typer(help="The model-call cache: stats and clear.", no_args_is_help=True)
app.add_typer(cache_app, name="cache")


def _cache(path: Optional[Path]):
    from dataflywheel.models.cache import CallCache

    return CallCache(path)


@cache_app.command("stats")
def cache_stats(
    path: Optional[Path] = typer.Option(None, "--path", help="Cache file (default: ~/.cache/dataflywheel/calls.sqlite)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Entries per model and method, and the file size."""
    stats = _cache(path).stats()
    if as_json:
        out.print_json(data=stats)
        return
    typer.echo(f"{stats['path']}: {stats['entries']} entries, {stats['bytes'] / 1e6:.1f} MB")
    for row in stats["by_model"]:
        typer.echo(f"  {row['entries']:>8}  {row['method']:<18} {row['model']}")


@cache_app.command("clear")
def cache_clear(
    path: Optional[Path] = typer.Option(None, "--path", help="Cache file (default: ~/.cache/dataflywheel/calls.sqlite)."),
    model: Optional[str] = typer.Option(None, "--model", help="Only this model's entries."),
) -> None:
    """Remove cached model answers."""
    typer.echo(f"removed {_cache(path).clear(model)} entries")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
