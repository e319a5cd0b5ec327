"""Preference pairs: HH-RLHF transcripts, TRL's formats, KTO labels, and explicit changes of kind."""

import gzip
import json

import pytest

from dataflywheel.io import ReadReject, read_records, read_rows, write_records
from dataflywheel.records import RecordError
from tests.conftest import read_jsonl, shared_data, write_jsonl

HH = {"chosen": "\n\nHuman: Can you help me bake bread?\n\nAssistant: Sure. Do you have yeast?\n\nHuman: yes"
                "\n\nAssistant: Mix 500 g flour, 7 g yeast, 10 g salt and 350 ml water; knead, rise, bake at 230C.",
      "rejected": "\n\nHuman: Can you help me bake bread?\n\nAssistant: Sure. Do you have yeast?\n\nHuman: yes"
                  "\n\nAssistant: Buy bread instead."}


def test_hh_transcripts_are_shared_prompt_turns_and_two_answers():
    [record] = list(read_rows([HH]))
    assert record["messages"] == [{"role": "user", "content": "Can you help me bake bread?"},
                                  {"role": "assistant", "content": "Sure. Do you have yeast?"},
                                  {"role": "user", "content": "yes"}]
    assert record["chosen"]["content"].startswith("Mix 500 g flour")
    assert record["rejected"] == {"role": "assistant", "content": "Buy bread instead."}


def test_hh_pairs_that_differ_before_the_answer_are_rejected():
    row = {"chosen": HH["chosen"] + "\n\nHuman: thanks\n\nAssistant: You're welcome.", "rejected": HH["rejected"]}
    [item] = list(read_rows([row]))
    assert isinstance(item, ReadReject)
    assert item.reason.startswith("chosen and rejected differ before their final answer, so they share no prompt: "
                                  "from turn 3 (chosen has 6 turns, rejected 4)")


def test_trl_conversational_preference_format_is_written_correctly(tmp_path):
    write_records(read_rows([HH]), tmp_path / "trl.jsonl", "trl_messages", with_meta=False)
    [row] = read_jsonl(tmp_path / "trl.jsonl")
    assert row == {"prompt": [{"role": "user", "content": "Can you help me bake bread?"},
                              {"role": "assistant", "content": "Sure. Do you have yeast?"},
                              {"role": "user", "content": "yes"}],
                   "chosen": [{"role": "assistant", "content": HH["chosen"].rsplit("Assistant: ", 1)[1]}],
                   "rejected": [{"role": "assistant", "content": "Buy bread instead."}]}


def test_hh_to_trl_to_hh_keeps_the_text(tmp_path):
    source = shared_data("hh_rlhf/harmless-base_test.jsonl.gz")
    records = [r for r in read_records(source) if not isinstance(r, ReadReject)]
    write_records(records, tmp_path / "trl.jsonl", "trl_messages")
    write_records(read_records(tmp_path / "trl.jsonl"), tmp_path / "hh.jsonl", "hh_rlhf", with_meta=False)
    with gzip.open(source, "rt", encoding="utf-8") as handle:
        original = [json.loads(line) for line in handle]
    back = read_jsonl(tmp_path / "hh.jsonl")
    assert len(original) == 2312 and len(back) == 2307  # 5 pairs that share no prompt are rejected at read
    assert [r for r in original if r in back] == back  # every written pair is an original, byte for byte, in order


def test_trl_implicit_prompt_pairs_are_split_at_the_shared_turns():
    turns = [{"role": "user", "content": "Capital of France?"}]
    [record] = list(read_rows([{"chosen": turns + [{"role": "assistant", "content": "Paris."}],
                                "rejected": turns + [{"role": "assistant", "content": "Lyon."}]}]))
    assert record["messages"] == turns and record["chosen"]["content"] == "Paris."


def test_kto_records_are_read_and_written(tmp_path):
    rows = [{"prompt": "2+2?", "completion": "4", "label": True},
            {"prompt": [{"role": "user", "content": "2+3?"}], "completion": [{"role": "assistant", "content": "6"}],
             "label": False}]
    records = list(read_rows(rows))
    assert [r["meta"]["label"] for r in records] == [True, False]
    assert records[1]["messages"][-1] == {"role": "assistant", "content": "6"}
    write_records(records, tmp_path / "kto.jsonl", "kto", with_meta=False)
    assert read_jsonl(tmp_path / "kto.jsonl") == [
        {"prompt": [{"role": "user", "content": "2+2?"}], "completion": [{"role": "assistant", "content": "4"}],
         "label": True},
        {"prompt": [{"role": "user", "content": "2+3?"}], "completion": [{"role": "assistant", "content": "6"}],
         "label": False}]
    [bad] = list(read_rows([{"prompt": "x", "completion": "y", "label": "yes"}], "kto"))
    assert bad.reason == "field 'label' must be true or false, got str"


def test_a_pair_becomes_sft_records_only_when_told(tmp_path):
    with pytest.raises(RecordError, match=r"data\[0\]: format 'messages' holds one answer per record and this is a "
                                          r"preference pair: say what to keep with --preference chosen"):
        write_records(read_rows([HH]), tmp_path / "sft.jsonl", "messages")
    assert not (tmp_path / "sft.jsonl").exists()

    assert write_records(read_rows([HH]), tmp_path / "chosen.jsonl", "messages", preference="chosen") == 1
    [chosen] = read_jsonl(tmp_path / "chosen.jsonl")
    assert chosen["messages"][-1]["content"].startswith("Mix 500 g flour") and len(chosen["messages"]) == 4

    assert write_records(read_rows([HH]), tmp_path / "kto.jsonl", "kto", preference="both", with_meta=False) == 1
    both = read_jsonl(tmp_path / "kto.jsonl")
    assert [(r["completion"][0]["content"][:8], r["label"]) for r in both] == [("Mix 500 ", True), ("Buy brea", False)]


def test_an_sft_record_is_not_made_into_a_pair(tmp_path):
    data = write_jsonl(tmp_path / "sft.jsonl", [{"instruction": "Hi", "output": "Hello"}])
    for fmt in ("trl", "trl_messages", "hh_rlhf"):
        with pytest.raises(RecordError, match=rf"sft.jsonl:1: format '{fmt}' holds preference pairs \(a chosen and a "
                                              r"rejected answer\) and this record has one answer"):
            write_records(read_records(data), tmp_path / f"{fmt}.jsonl", fmt)
        assert not (tmp_path / f"{fmt}.jsonl").exists()


def test_llamafactory_preference_rows_round_trip(tmp_path):
    source = shared_data("llamafactory/dpo_en_demo.json")
    original = json.loads(source.read_text(encoding="utf-8"))
    records = list(read_records(source))
    assert sum(r["messages"][0]["role"] == "system" for r in records) == 80  # a system turn in 80 conversations
    write_records(records, tmp_path / "dpo.json", "sharegpt")
    back = json.loads((tmp_path / "dpo.json").read_text(encoding="utf-8"))
    for before, after in zip(original, back):
        turns = before["conversations"]
        if turns[0]["from"] == "system":  # written as LLaMA-Factory's system column
            before = {**before, "system": turns[0]["value"], "conversations": turns[1:]}
        assert after == before


def test_a_run_writes_pairs_as_sft_when_its_recipe_says_so(tmp_path):
    from dataflywheel.pipeline import LocalExecutor, parse_recipe

    data = write_jsonl(tmp_path / "hh.jsonl", [HH])
    recipe = parse_recipe({"input": {"path": str(data)}, "output": {
        "dir": str(tmp_path / "run"), "format": "kto", "preference": "both", "for_training": True}})
    manifest = LocalExecutor(recipe, quiet=True).execute(report=False)
    assert manifest["totals"]["output"] == 1  # one record, written as two rows
    rows = read_jsonl(tmp_path / "run" / "output.jsonl")
    assert [(r["completion"][0]["content"], r["label"]) for r in rows] == [
        (HH["chosen"].rsplit("Assistant: ", 1)[1], True), ("Buy bread instead.", False)]
