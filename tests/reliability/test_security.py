"""Security rules: recipes cannot run code, plugins load only when listed, API keys reach no file or message,
outputs stay in the run directory, record text cannot inject template syntax, and the report stays escaped."""

import json
import re
import sqlite3
import sys
from html.parser import HTMLParser
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from dataflywheel.cli import app
from dataflywheel.pipeline import LocalExecutor, parse_recipe
from dataflywheel.pipeline.recipe import RecipeError, load_recipe
from dataflywheel.prompts import render_file
from tests.models.fault_server import FaultServer
from tests.conftest import write_jsonl

SRC = Path(__file__).parents[2] / "src" / "dataflywheel"
KEY = "sk-planted-0123456789abcdefSECRET"
HOSTILE = "Compute {{ 7*7 }} {% for x in range(3) %}{{ x }}{% endfor %} {{ self.__init__.__globals__ }} {# c #}"
runner = CliRunner()

# ---- recipes cannot execute code ----------------------------------------------------------------------------

TAGS = ["!!python/object/apply:os.system ['touch {mark}']",
        "!!python/object/apply:subprocess.check_output [['touch', '{mark}']]",
        "!!python/object/new:subprocess.Popen [['touch', '{mark}']]",
        "!!python/name:os.system",
        "!!python/module:os"]


@pytest.mark.parametrize("tag", TAGS)
def test_python_yaml_tags_are_refused_and_run_nothing(tmp_path, tag):
    mark = tmp_path / "pwned"
    recipe = tmp_path / "evil.yaml"
    recipe.write_text(f"input: {{path: x.jsonl}}\nseed: {tag.format(mark=mark)}\nsteps: []\n")
    with pytest.raises(RecipeError, match="invalid YAML"):
        load_recipe(recipe)
    import dataflywheel

    with pytest.raises(RecipeError, match="invalid YAML"):  # the Python API reads the file the same way
        dataflywheel.run(str(recipe), [{"text": "a"}], output=tmp_path / "run")
    result = runner.invoke(app, ["run", str(recipe)])
    assert result.exit_code == 2 and "invalid YAML" in result.output and isinstance(result.exception, SystemExit)
    assert not mark.exists()


UNSAFE = [  # (pattern, files where it is allowed and why)
    (r"yaml\.(load|unsafe_load|full_load)\(|yaml\.(Unsafe|Full)?Loader\b", {}),
    (r"(?<![\w.])(eval|exec)\(", {}),
    (r"pickle\.loads?\(", {"pipeline/workers.py": "operators this process pickled itself, sent to its own workers",
                           "pipeline/ray_apply.py": "operators the driver pickled itself for its Ray workers, and "
                                                    "the FatalErrors those workers pickled back"}),
    (r"torch\.load\(|np\.load\(.*allow_pickle=True|joblib\.load\(|dill\.", {}),
    (r"trust_remote_code\s*=\s*True", {}),
]


def test_no_unsafe_loader_reads_user_data():
    found = []
    for path in sorted(SRC.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        for pattern, allowed in UNSAFE:
            if re.search(pattern, text) and path.relative_to(SRC).as_posix() not in allowed:
                found.append(f"{path.relative_to(SRC)}: {pattern}")
    assert not found
    assert "yaml.safe_load" in (SRC / "pipeline" / "recipe.py").read_text()


# ---- plugins only when listed ---------------------------------------------------------------------------------

PLUGIN = "tests.reliability.marker_plugin"


def test_a_plugin_is_imported_only_when_the_recipe_lists_it(tmp_path):
    steps = [{"op": "reliability.marker"}]
    assert PLUGIN not in sys.modules
    with pytest.raises(RecipeError, match="unknown operator 'reliability.marker'"):
        parse_recipe({"input": {"path": "x.jsonl"}, "steps": steps})
    assert PLUGIN not in sys.modules
    parse_recipe({"input": {"path": "x.jsonl"}, "plugins": [PLUGIN], "steps": steps})
    assert sys.modules[PLUGIN].IMPORTED


@pytest.mark.parametrize("plugins, words", [
    ("tests.reliability.marker_plugin", "must be a list of module names"),  # a string is not a list of names
    ([""], "must be a list of module names"),
    ([7], "must be a list of module names"),
    (["no_such_module_for_dfw"], "cannot import plugin 'no_such_module_for_dfw': ModuleNotFoundError"),
    (["tests.reliability.broken_plugin"], "cannot import plugin 'tests.reliability.broken_plugin': RuntimeError"),
])
def test_a_bad_plugin_list_is_a_recipe_error(plugins, words):
    with pytest.raises(RecipeError) as err:
        parse_recipe({"input": {"path": "x.jsonl"}, "plugins": plugins, "steps": []})
    assert words in str(err.value)


# ---- output paths stay in the run directory -------------------------------------------------------------------


@pytest.mark.parametrize("file", ["../../etc/x.jsonl", "/tmp/dfw-outside.jsonl", "sub/../../x.jsonl", "..", "."])
def test_an_output_file_outside_the_run_directory_is_refused(tmp_path, file):
    with pytest.raises(RecipeError, match="not a file inside the run directory"):
        parse_recipe({"input": {"path": "x.jsonl"}, "output": {"dir": str(tmp_path / "run"), "file": file}})


def test_the_run_directory_itself_may_be_anywhere_and_files_may_sit_in_subfolders(tmp_path):
    data = write_jsonl(tmp_path / "in.jsonl", [{"instruction": "q", "output": "a"}])
    recipe = parse_recipe({"input": {"path": str(data)}, "cache": "off",
                           "output": {"dir": str(tmp_path / "elsewhere" / "run"), "file": "sub/out.jsonl"}})
    LocalExecutor(recipe, quiet=True).execute(report=False)
    assert (tmp_path / "elsewhere" / "run" / "sub" / "out.jsonl").exists()


# ---- API keys reach no file, cache, report, log or message ---------------------------------------------------


def echo_server(mode: str) -> FaultServer:
    """'ok' answers "4 Good."; '401' and '500' answer with an error body that quotes the key they were sent."""
    if mode == "ok":
        return FaultServer(answer=lambda body: "4 Good.")
    return FaultServer(rule=lambda body: f"{mode}:echo-key")


def files_text(path: Path) -> str:
    """Everything a file holds, as text: raw bytes, plus decoded Parquet tables and SQLite rows (compressed
    or binary containers could hide a key from a byte search)."""
    parts = [path.read_bytes().decode("utf-8", "replace")]
    if path.suffix == ".parquet":
        parts.append(json.dumps(pq.read_table(path).to_pylist(), default=str, ensure_ascii=False))
    if path.suffix == ".sqlite":
        with sqlite3.connect(path) as db:
            parts.extend(db.iterdump())
    return "\n".join(parts)


def judge_recipe(tmp_path, server, max_retries=0):
    rows = [{"instruction": HOSTILE, "output": "It is 49."}, {"instruction": "Say hi.", "output": "Hi there."}]
    data = write_jsonl(tmp_path / "in.jsonl", rows)
    recipe = {"input": {"path": str(data)}, "output": {"dir": str(tmp_path / "run")},
              "cache": str(tmp_path / "calls.sqlite"),
              "models": {"judge": {"backend": "openai", "model": "m",
                                   "options": {"base_url": server.url, "api_key_env": "DFW_PLANTED_KEY",
                                               "max_retries": max_retries, "backoff": 0.01, "concurrency": 1}}},
              "steps": [{"op": "score.judge", "method": "generate"}]}
    path = tmp_path / "recipe.yaml"
    path.write_text(json.dumps(recipe))
    return path


@pytest.mark.parametrize("mode", ["ok", "401", "500"])
def test_an_api_key_reaches_no_file_and_no_message(tmp_path, monkeypatch, capfd, mode):
    monkeypatch.setenv("DFW_PLANTED_KEY", KEY)
    with echo_server(mode) as server:
        result = runner.invoke(app, ["run", str(judge_recipe(tmp_path, server)), "-q"])
        report = runner.invoke(app, ["report", str(tmp_path / "run")])
    auth = [r["authorization"] for r in server.requests]
    assert auth and all(a == f"Bearer {KEY}" for a in auth)  # the key was sent, and only there
    # a 500 on every record rejects each with its reason, and the run fails naming the step that failed on all
    assert result.exit_code == {"ok": 0, "401": 1, "500": 2}[mode], result.output
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.name == "manifest.json" for p in written) and any(p.suffix == ".sqlite" for p in written)
    if mode == "ok":
        assert any(p.name == "report.html" for p in written) and any(p.name == "output.jsonl" for p in written)
    leaks = [str(p) for p in written if KEY in files_text(p)]
    out, err = capfd.readouterr()
    messages = [result.output, report.output, out, err, repr(result.exception)]
    assert not leaks and not [m for m in messages if KEY in m]
    shown = {"401": result.output + (tmp_path / "run" / "manifest.json").read_text(),
             "500": "".join(files_text(p) for p in (tmp_path / "run" / "rejected").glob("*.parquet"))}
    if mode != "ok":  # the server's message is still shown (in the error, or in each reject's reason), key masked
        assert "Incorrect API key provided: Bearer ***" in shown[mode]


@pytest.mark.parametrize("option", ["api_key", "token", "Authorization"])
def test_a_key_written_into_a_recipe_is_refused(option):
    with pytest.raises(RecipeError, match=f"option '{option}' would write a secret.*api_key_env"):
        parse_recipe({"input": {"path": "x.jsonl"}, "models": {"judge": {"backend": "openai", "model": "m",
                                                                        "options": {option: KEY}}}})


# ---- record text is never template syntax ---------------------------------------------------------------------


def test_record_text_reaches_the_model_verbatim(tmp_path, monkeypatch):
    monkeypatch.setenv("DFW_PLANTED_KEY", KEY)
    with echo_server("ok") as server:
        result = runner.invoke(app, ["run", str(judge_recipe(tmp_path, server)), "-q"])
    assert result.exit_code == 0, result.output
    prompts = [r["body"]["messages"][0]["content"] for r in server.requests]
    hostile = [p for p in prompts if "Compute" in p]
    assert len(hostile) == 1 and HOSTILE in hostile[0] and "49" not in hostile[0].replace("It is 49.", "")
    assert "### Instruction:" in hostile[0]  # the operator's real template was rendered around it


def test_template_syntax_in_values_is_not_evaluated():
    template = SRC / "ops" / "score" / "prompts" / "alpagasus.txt"
    text = render_file(template, instruction=HOSTILE, response="{{ response }} {% raw %}")
    assert HOSTILE in text and "{{ response }} {% raw %}" in text and "012" not in text and "globals" in text


# ---- the HTML report stays escaped ----------------------------------------------------------------------------

INJECTION = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2">'


def parsed_tags(html: str) -> list[tuple[str, list[str]]]:
    """Every start tag of the page with its attribute names, as a browser's parser sees them."""
    tags = []

    class Parser(HTMLParser):
        def handle_starttag(self, tag, attrs):
            tags.append((tag, [name for name, _ in attrs]))

    Parser().feed(html)
    return tags


def test_the_report_escapes_lineage_rationales_and_every_other_field(tmp_path):
    lineage = [{"step": INJECTION, "op": INJECTION, "parents": [INJECTION],
                "details": {"rationale": INJECTION, "judge": INJECTION, "original": INJECTION}}]
    rows = [{"instruction": f"Q{i} " + INJECTION, "output": f"An answer long enough {i} " + INJECTION,
             "category": INJECTION, "scores": {INJECTION: 1.0 + i}, "lineage": lineage,
             "rationale": INJECTION, "judge_text": INJECTION} for i in range(3)]
    rows.append({"instruction": "short " + INJECTION, "output": "no"})
    rows.append({"instruction": "JUDGE this", "output": "A rationale long enough to pass: " + INJECTION})
    data = write_jsonl(tmp_path / "in.jsonl", rows)
    with open(data, "a", encoding="utf-8") as handle:
        handle.write(INJECTION + "\n")  # an unreadable line: its raw text is shown too
    recipe = parse_recipe({"input": {"path": str(data)}, "output": {"dir": str(tmp_path / "run")}, "cache": "off",
                           "plugins": ["tests.reliability.judge_plugin"],
                           "steps": [{"op": "select.length_filter", "min_response_words": 5, "name": "len<script>"},
                                     {"op": "reliability.says_why"}, {"op": "select.exact_dedup"}]})
    manifest = LocalExecutor(recipe, quiet=True).execute()
    assert manifest["totals"]["rejected"] == 3
    html = (tmp_path / "run" / "report.html").read_text()
    tags = parsed_tags(html)
    assert [t for t, _ in tags if t in ("script", "img", "iframe")] == ["script", "script"]  # our data and our code
    assert not [(t, a) for t, attrs in tags for a in attrs if a.startswith("on")]  # no event handler from data
    assert "onerror=&quot;" in html  # the text is on the page, escaped
    data_block = html.split('id="record-data">', 1)[1].split("</script>", 1)[0]
    assert "<" not in data_block and ">" not in data_block
    records = json.loads(data_block)["records"]
    assert any(INJECTION in row[8] for row in records if row[8])  # lineage parents are there, as data
    assert any(row[3] == "the judge said: A rationale long enough to pass: " + INJECTION for row in records)
    assert "the judge said: A rationale long enough to pass: &lt;script&gt;" in html  # in the funnel's top reasons
    assert "len&lt;script&gt;" in html and "score &lt;script&gt;" in html  # step and score names escaped
