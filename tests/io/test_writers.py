"""Writers leave no partial file, and write the layouts LLaMA-Factory and Axolotl read."""

import json
from pathlib import Path

import pytest
import yaml

from dataflywheel.io import read_rows, write_records
from dataflywheel.io.layouts import write_layout
from dataflywheel.records import RecordError
from tests.conftest import read_jsonl

GLAIVE = Path(__file__).parent / "fixtures" / "glaive_toolcall_sample.json"
SINGLE = {"prompt": "Is the sky blue?", "chosen": "Yes, on a clear day.", "rejected": "No."}
MULTI = {"prompt": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"},
                    {"role": "user", "content": "Is the sky blue?"}],
         "chosen": [{"role": "assistant", "content": "Yes."}], "rejected": [{"role": "assistant", "content": "No."}]}


@pytest.mark.parametrize("name", ["out.jsonl", "out.jsonl.gz", "out.json", "out.parquet", "out.csv", "out_hf"])
def test_a_failed_write_leaves_nothing_and_keeps_the_old_file(tmp_path, name):
    target = tmp_path / name
    write_records(read_rows([SINGLE]), target, "trl")
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    with pytest.raises(RecordError, match=r"data\[1\]: format 'trl' holds a single user prompt; use 'trl_messages'"):
        write_records(read_rows([SINGLE, MULTI]), target, "trl")
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before  # no partial file beside it
    assert [r["chosen"]["content"] for r in read_rows_of(target)] == ["Yes, on a clear day."]


def read_rows_of(path):
    from dataflywheel.io import read_records

    return list(read_records(path))


def test_text_files_are_read_only(tmp_path):
    with pytest.raises(RecordError, match="out.txt: a .txt file is read only; write one of jsonl"):
        write_records(read_rows([{"text": "a"}]), tmp_path / "out.txt")


def test_parquet_is_not_gzipped_on_write_but_a_gzipped_one_is_read(tmp_path):
    """A .parquet.gz output used to be plain Parquet under a gzip name; Parquet compresses inside the file."""
    import gzip

    from dataflywheel.pipeline import RecipeError, parse_recipe

    with pytest.raises(RecordError, match="out.parquet.gz: Parquet compresses inside the file"):
        write_records(read_rows([SINGLE]), tmp_path / "out.parquet.gz", "trl")
    with pytest.raises(RecordError, match="Parquet compresses inside the file"):  # the type named (flywheel convert)
        write_records(read_rows([SINGLE]), tmp_path / "out.parquet.gz", "trl", "parquet")
    with pytest.raises(RecipeError, match="Parquet compresses inside the file"):
        parse_recipe({"input": {"path": "in.jsonl"}, "output": {"file": "out.parquet.gz"},
                      "steps": [{"op": "select.length_filter"}]})
    write_records(read_rows([SINGLE]), tmp_path / "out.parquet", "trl")
    (tmp_path / "other.parquet.gz").write_bytes(gzip.compress((tmp_path / "out.parquet").read_bytes()))
    assert [r["chosen"]["content"] for r in read_rows_of(tmp_path / "other.parquet.gz")] == ["Yes, on a clear day."]


def test_llamafactory_layout_adds_its_entry_and_keeps_the_others(tmp_path):
    (tmp_path / "dataset_info.json").write_text(json.dumps({"identity": {"file_name": "identity.json"}}))
    written = write_layout(read_rows_of(GLAIVE), tmp_path, "llamafactory", "glaive")
    assert written["kind"] == "sft" and written["records"] == 2
    info = json.loads((tmp_path / "dataset_info.json").read_text())
    # the entry LLaMA-Factory itself ships for glaive_toolcall_en_demo
    assert info == {"identity": {"file_name": "identity.json"},
                    "glaive": {"file_name": "glaive.jsonl", "formatting": "sharegpt",
                               "columns": {"messages": "conversations", "tools": "tools"}}}
    assert read_jsonl(tmp_path / "glaive.jsonl") == json.loads(GLAIVE.read_text())

    write_layout(read_rows([MULTI]), tmp_path, "llamafactory", "pairs")
    assert json.loads((tmp_path / "dataset_info.json").read_text())["pairs"] == {
        "file_name": "pairs.jsonl", "formatting": "sharegpt", "ranking": True,
        "columns": {"messages": "conversations", "chosen": "chosen", "rejected": "rejected"}}
    assert read_jsonl(tmp_path / "pairs.jsonl")[0]["chosen"] == {"from": "gpt", "value": "Yes."}

    write_layout(read_rows([{"prompt": "2+2?", "completion": "4", "label": True}]), tmp_path, "llamafactory", "kto")
    assert json.loads((tmp_path / "dataset_info.json").read_text())["kto"]["columns"] == {
        "messages": "conversations", "kto_tag": "label"}
    assert read_jsonl(tmp_path / "kto.jsonl") == [{"conversations": [{"from": "human", "value": "2+2?"},
                                                                     {"from": "gpt", "value": "4"}], "label": True}]


def test_a_layout_holds_one_kind_and_says_which_record_breaks_it(tmp_path):
    sft = {"instruction": "Hi", "output": "Hello"}
    with pytest.raises(RecordError, match=r"data\[1\]: a preference record in a dataset of sft records"):
        write_layout(read_rows([sft, SINGLE]), tmp_path, "llamafactory", "mixed")
    assert not list(tmp_path.iterdir())
    written = write_layout(read_rows([sft, SINGLE]), tmp_path, "llamafactory", "mixed", preference="chosen")
    assert written["records"] == 2 and written["kind"] == "sft"


def test_llamafactory_layout_refuses_turns_it_would_skip(tmp_path):
    row = {"messages": [{"role": "user", "content": "Both?"},
                        {"role": "assistant", "content": "", "tool_calls": [
                            {"type": "function", "function": {"name": "a", "arguments": "{}"}},
                            {"type": "function", "function": {"name": "b", "arguments": "{}"}}]},
                        {"role": "tool", "content": "1"}, {"role": "tool", "content": "2"},
                        {"role": "assistant", "content": "1 and 2."}]}
    with pytest.raises(RecordError, match="LLaMA-Factory needs turns that alternate user/observation and "
                                          "assistant/function_call; turn 3 is 'observation'"):
        write_layout(read_rows([row]), tmp_path, "llamafactory", "parallel")
    assert not list(tmp_path.iterdir())


def test_axolotl_layout_for_sft_and_dpo(tmp_path):
    written = write_layout(read_rows([{"instruction": "Hi", "output": "Hello"}]), tmp_path / "sft", "axolotl", "d")
    config = yaml.safe_load(Path(written["config"]).read_text())
    assert config == {"datasets": [{"path": str((tmp_path / "sft" / "d.jsonl").resolve()), "ds_type": "json",
                                    "type": "chat_template", "field_messages": "messages",
                                    "roles_to_train": ["assistant"]}]}
    assert read_jsonl(tmp_path / "sft" / "d.jsonl") == [
        {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}]

    written = write_layout(read_rows([MULTI]), tmp_path / "dpo", "axolotl", "d")
    config = yaml.safe_load(Path(written["config"]).read_text())
    assert config["rl"] == "dpo" and config["datasets"][0]["type"] == "chat_template.default"
    assert {k: config["datasets"][0][k] for k in ("field_messages", "field_chosen", "field_rejected")} == {
        "field_messages": "messages", "field_chosen": "chosen", "field_rejected": "rejected"}
    # what axolotl's chat_template.default reads: the prompt turns, and one assistant turn per answer
    assert read_jsonl(tmp_path / "dpo" / "d.jsonl") == [{"messages": MULTI["prompt"], "chosen": MULTI["chosen"][0],
                                                         "rejected": MULTI["rejected"][0]}]
