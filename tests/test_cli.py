import json

from typer.testing import CliRunner

from dataflywheel.cli import app
from dataflywheel.ops import all_operators
from tests.conftest import EXAMPLE_DATA, read_jsonl, write_jsonl

runner = CliRunner()


def test_ops_lists_every_operator_with_doc_and_config():
    result = runner.invoke(app, ["ops"])
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert len(lines) == 2 * len(all_operators())
    for name, cls in all_operators().items():
        [index] = [i for i, line in enumerate(lines) if line.split()[0] == name]
        assert lines[index].split()[1] == cls.kind and lines[index].endswith(cls.summary())
        config = lines[index + 1].strip()
        assert config.startswith("config:")
        for field in cls.Config.model_fields:
            assert f"{field}=" in config


def test_ops_name_shows_one_operator_in_full():
    result = runner.invoke(app, ["ops", "select.length_filter"])
    assert result.exit_code == 0
    assert "select.length_filter  (filter)" in result.output
    assert "max_response_words: int | None = None" in result.output


def test_ops_unknown_name_exits_2():
    result = runner.invoke(app, ["ops", "select.nope"])
    assert result.exit_code == 2 and "unknown operator" in result.output


def test_every_command_has_help():
    for command in ([], ["run"], ["ops"], ["convert"], ["inspect"], ["report"], ["train"], ["evaluate"], ["cache"]):
        result = runner.invoke(app, command + ["--help"])
        assert result.exit_code == 0 and "Usage" in result.output


def test_convert_alpaca_to_sharegpt_parquet_and_back(tmp_path):
    parquet = tmp_path / "sample.parquet"
    result = runner.invoke(app, ["convert", str(EXAMPLE_DATA), str(parquet), "--to", "sharegpt"])
    assert result.exit_code == 0, result.output
    back = tmp_path / "back.jsonl"
    assert runner.invoke(app, ["convert", str(parquet), str(back), "--to", "messages"]).exit_code == 0
    rows = read_jsonl(back)
    source = read_jsonl(EXAMPLE_DATA)
    assert len(rows) == len(source)
    assert rows[0]["messages"][1]["content"] == source[0]["output"]
    assert rows[0]["generator"] == source[0]["generator"]


def test_convert_keeps_unreadable_rows(tmp_path):
    bad = write_jsonl(tmp_path / "in.jsonl", [{"text": "fine"}, "{not json", {"text": 5}])
    result = runner.invoke(app, ["convert", str(bad), str(tmp_path / "out.jsonl")])
    assert result.exit_code == 0
    rejects = read_jsonl(tmp_path / "out.jsonl.rejects.jsonl")
    assert [r["source"] for r in rejects] == ["in.jsonl:2", "in.jsonl:3"]
    assert len(read_jsonl(tmp_path / "out.jsonl")) == 1


def test_inspect_reports_counts_lengths_and_fields(tmp_path):
    result = runner.invoke(app, ["inspect", str(EXAMPLE_DATA), "--json"])
    assert result.exit_code == 0
    stats = json.loads(result.output)
    source = read_jsonl(EXAMPLE_DATA)
    assert stats["records"] == len(source) and stats["format"] == "alpaca" and stats["file_type"] == "jsonl"
    longest = max(len(r["output"].split()) for r in source)
    assert stats["response_words"]["max"] == longest
    assert {"generator", "dataset"} <= set(stats["fields"])


def test_inspect_a_run_shows_its_scores(tmp_path):
    path = write_jsonl(tmp_path / "scored.jsonl", [
        {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a b"}], "scores": {"ifd": 0.5}},
        {"messages": [{"role": "user", "content": "q2"}, {"role": "assistant", "content": "c"}], "scores": {"ifd": 0.9}},
    ])
    stats = json.loads(runner.invoke(app, ["inspect", str(path), "--json"]).output)
    assert stats["scores"]["ifd"]["count"] == 2 and stats["scores"]["ifd"]["max"] == 0.9
    table = runner.invoke(app, ["inspect", str(path)], env={"COLUMNS": "200"}).output
    assert "score ifd" in table and "records" in table


def test_run_workers_flag_overrides_the_recipe_and_is_checked(tmp_path):
    rows = [{"instruction": f"Explain topic number {i} in a few words", "output": f"Topic {i} is simple."}
            for i in range(600)]
    data = write_jsonl(tmp_path / "data.jsonl", rows)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(json.dumps({"input": {"path": str(data)}, "output": {"dir": str(tmp_path / "run")},
                                  "batch_size": 100, "workers": 1,
                                  "steps": [{"op": "select.repetition_filter"}]}))
    bad = runner.invoke(app, ["run", str(recipe), "--workers", "0", "-q"])
    assert bad.exit_code == 2 and not (tmp_path / "run").exists()
    result = runner.invoke(app, ["run", str(recipe), "--workers", "2", "-q"])
    assert result.exit_code == 0, result.output
    assert len(read_jsonl(tmp_path / "run" / "output.jsonl")) == 600
    assert json.loads((tmp_path / "run" / "manifest.json").read_text())["workers"] == 2


def test_inspect_says_why_rows_are_unreadable_and_fails_when_none_is(tmp_path):
    rows = [{"q": "?", "a": "!"}, "{broken",
            {"conversations": [{"from": "gpt", "value": "Hi"}, {"from": "human", "value": "?"}]}]
    bad = write_jsonl(tmp_path / "bad.jsonl", rows)
    result = runner.invoke(app, ["inspect", str(bad)], env={"COLUMNS": "250"})
    assert result.exit_code == 1
    assert "unreadable           3" in result.output
    assert "1 x cannot tell the format from fields ['a', 'q']" in result.output
    assert "(first: bad.jsonl:1)" in result.output
    assert "1 x invalid JSON (first: bad.jsonl:2)" in result.output
    assert "1 x the conversation starts with an assistant turn, not a user turn (first: bad.jsonl:3)" in result.output
    assert f"no readable records in {bad}" in result.output
    as_json = runner.invoke(app, ["inspect", str(bad), "--json"])
    assert as_json.exit_code == 1 and json.loads(as_json.stdout)["unreadable"] == 3


def test_inspect_reads_a_runs_rejects_and_rounds_scores(tmp_path):
    rows = [{"instruction": f"Question {i}?", "output": "Yes." if i % 2 else "A longer answer of many words.",
             "scores": {"ifd": 0.123456789 * (i + 1)}} for i in range(6)]
    data = write_jsonl(tmp_path / "data.jsonl", rows + ["{broken"])
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(json.dumps({"input": {"path": str(data)}, "output": {"dir": str(tmp_path / "run")},
                                  "steps": [{"op": "select.length_filter", "min_response_words": 3}]}))
    assert runner.invoke(app, ["run", str(recipe), "-q"]).exit_code == 0
    stats = json.loads(runner.invoke(app, ["inspect", str(tmp_path / "run" / "rejected"), "--json"]).stdout)
    assert stats["format"] == "rejects" and stats["records"] == 3 and stats["unreadable"] == 1
    assert list(stats["rejected_by"]) == ["length_filter: response too short"]
    assert stats["scores"]["ifd"]["max"] == 0.7407  # 0.123456789 * 6 = 0.740740734, to 4 significant digits
    table = runner.invoke(app, ["inspect", str(tmp_path / "run" / "rejected")], env={"COLUMNS": "250"}).output
    assert "3 x length_filter: response too short" in table and "max 0.7407" in table
    assert "rejected by step 'read' as unreadable, invalid JSON" in table


def test_convert_into_a_trainer_layout(tmp_path):
    pairs = write_jsonl(tmp_path / "pairs.jsonl", [{"prompt": "Sky?", "chosen": "Blue.", "rejected": "Green."}])
    result = runner.invoke(app, ["convert", str(pairs), str(tmp_path / "lf"), "--to", "llamafactory"])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "lf" / "dataset_info.json").read_text())["pairs"]["ranking"] is True
    chosen = runner.invoke(app, ["convert", str(pairs), str(tmp_path / "sft.jsonl"), "--to", "alpaca",
                                 "--preference", "chosen"])
    assert chosen.exit_code == 0 and read_jsonl(tmp_path / "sft.jsonl") == [
        {"instruction": "Sky?", "input": "", "output": "Blue."}]
