"""Every turn is kept: LLaMA-Factory history, system prompts, tool calls and results; rows nothing can be
trained on are rejected with that reason."""

import json
from pathlib import Path

import pytest

from dataflywheel.io import ReadReject, read_records, read_rows, write_records
from dataflywheel.records import RecordError, conversation_text, instruction_text, response_text
from tests.conftest import read_jsonl, shared_data

GLAIVE = Path(__file__).parent / "fixtures" / "glaive_toolcall_sample.json"


def one(row, fmt=None):
    [item] = list(read_rows([row], fmt))
    return item


def test_alpaca_history_becomes_earlier_turns():
    record = one({"instruction": "And in French?", "input": "", "output": "Bonjour.", "system": "Be brief.",
                  "history": [["Say hello.", "Hello."], ["Louder.", "HELLO."]]})
    assert record["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Say hello."}, {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "Louder."}, {"role": "assistant", "content": "HELLO."},
        {"role": "user", "content": "And in French?"}, {"role": "assistant", "content": "Bonjour."}]
    assert instruction_text(record) == "And in French?" and response_text(record) == "Bonjour."


def test_a_broken_history_is_a_reject_naming_the_pair():
    item = one({"instruction": "q", "output": "a", "history": [["only a prompt"]]})
    assert isinstance(item, ReadReject) and item.reason == "history[0] must be a [prompt, response] pair of strings"


def test_lima_with_history_to_messages_and_back_is_identical(tmp_path):
    source = shared_data("llamafactory/lima.json")
    original = json.loads(source.read_text(encoding="utf-8"))
    write_records(read_records(source), tmp_path / "lima.jsonl", "messages")
    messages = read_jsonl(tmp_path / "lima.jsonl")
    with_history = [i for i, row in enumerate(original) if row["history"]]
    assert len(with_history) == 29
    # the earlier turns are turns now: 2 per history pair, then the instruction and the answer
    assert all(len(messages[i]["messages"]) == 2 * len(original[i]["history"]) + 2 for i in with_history)
    write_records(read_records(tmp_path / "lima.jsonl"), tmp_path / "back.json", "alpaca")
    back = json.loads((tmp_path / "back.json").read_text(encoding="utf-8"))
    assert [back[i] for i in with_history] == [original[i] for i in with_history]
    # an empty history says nothing, and messages have no place for it: it is the one key not carried
    assert back == [{k: v for k, v in row.items() if k != "history" or v} for row in original]


def test_alpaca_to_alpaca_keeps_an_empty_history(tmp_path):
    rows = [{"instruction": "Hi", "input": "", "output": "Hello", "history": []}]
    (tmp_path / "a.json").write_text(json.dumps(rows))
    write_records(read_records(tmp_path / "a.json"), tmp_path / "b.json", "alpaca")
    assert json.loads((tmp_path / "b.json").read_text()) == rows


def test_sharegpt_tool_turns_are_kept_as_turns():
    first, second = list(read_records(GLAIVE))
    roles = [m["role"] for m in second["messages"]]
    assert roles == ["user", "assistant", "tool", "assistant"] * 3
    call = second["messages"][1]
    assert call["content"] == ""
    assert call["tool_calls"] == [{"type": "function", "function": {
        "name": "calculate_area", "arguments": '{"shape": "rectangle", "dimensions": [5, 3]}'}}]
    assert second["messages"][2] == {"role": "tool", "content": '{"area": 15}'}
    assert json.loads(second["meta"]["tools"])[0]["name"] == "calculate_area"
    # filters and scorers read the prose: no call arguments, no tool output
    text = conversation_text(second)
    assert "The area of the rectangle with length 5 units" in text
    assert '"area": 15' not in text and "dimensions" not in text
    assert response_text(second) == "The area of the square with side length 7 units is 49 square units."


@pytest.mark.parametrize("middle", ["sharegpt", "messages"])
def test_sharegpt_with_tool_turns_round_trips(tmp_path, middle):
    original = json.loads(GLAIVE.read_text(encoding="utf-8"))
    write_records(read_records(GLAIVE), tmp_path / f"mid.{'json' if middle == 'sharegpt' else 'jsonl'}", middle)
    mid = next(tmp_path.glob("mid.*"))
    write_records(read_records(mid), tmp_path / "back.json", "sharegpt")
    assert json.loads((tmp_path / "back.json").read_text(encoding="utf-8")) == original


def test_openai_tool_calls_and_legacy_function_calls_are_read():
    record = one({"messages": [
        {"role": "user", "content": "Weather in Oslo?", "tool_calls": None},  # as OpenAI exports write it
        {"role": "assistant", "content": None,
         "tool_calls": [{"id": "c1", "type": "function",
                         "function": {"name": "weather", "arguments": {"city": "Oslo"}}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "-3C"},
        {"role": "assistant", "content": None, "function_call": {"name": "wind", "arguments": "{\"city\": \"Oslo\"}"}},
        {"role": "function", "name": "wind", "content": "calm"},
        {"role": "assistant", "content": "Cold (-3C) and calm."}]})
    turns = record["messages"]
    assert turns[0] == {"role": "user", "content": "Weather in Oslo?"}
    assert turns[1] == {"role": "assistant", "content": "", "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "weather", "arguments": '{"city": "Oslo"}'}}]}
    assert turns[2] == {"role": "tool", "tool_call_id": "c1", "content": "-3C"}
    assert turns[3]["tool_calls"][0]["function"] == {"name": "wind", "arguments": '{"city": "Oslo"}'}
    assert turns[4] == {"role": "tool", "name": "wind", "content": "calm"}


def test_tool_turns_refuse_formats_of_plain_text(tmp_path):
    with pytest.raises(RecordError, match=r"glaive_toolcall_sample.json\[0\]: format 'alpaca' holds plain user and "
                                          r"assistant text and messages\[3\] is a tool call"):
        write_records(read_records(GLAIVE), tmp_path / "out.json", "alpaca")
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("row, reason", [
    ({"conversations": [{"from": "gpt", "value": "Hi! Ask me anything."}, {"from": "human", "value": "Why?"},
                        {"from": "gpt", "value": "Because."}]},
     "the conversation starts with an assistant turn, not a user turn: messages[0] answers no question"),
    ({"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"},
                        {"from": "human", "value": "Bye"}]},
     "the conversation ends with a user turn, not an assistant answer: messages[2] is left unanswered"),
    ({"messages": [{"role": "system", "content": "Be kind."}]},
     "the record holds only a system prompt: no user turn and no answer"),
    ({"prompt": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}],
      "chosen": [{"role": "assistant", "content": "good"}], "rejected": [{"role": "assistant", "content": "bad"}]},
     "the prompt of a preference pair ends with an assistant turn"),
    ({"conversations": [{"from": "robot", "value": "beep"}]}, "conversations[0] has unknown speaker 'robot'"),
    ({"conversations": [{"from": "human", "value": "x"}, {"from": "function_call", "value": "not json"},
                        {"from": "observation", "value": "1"}, {"from": "gpt", "value": "y"}]},
     "conversations[1] (function_call) must be JSON {name, arguments}"),
])
def test_rows_that_cannot_be_trained_on_are_rejected_with_the_reason(row, reason):
    item = one(row)
    assert isinstance(item, ReadReject) and reason in item.reason, item


def test_prompt_only_rows_are_prompt_only_records():
    records = list(read_rows([{"instruction": "Write a haiku.", "dataset": "selfinstruct"},
                              {"messages": [{"role": "system", "content": "Be brief."},
                                            {"role": "user", "content": "Name a colour."}]},
                              {"prompt": [{"role": "user", "content": "2+2?"}]}]))
    assert [r["messages"][-1] for r in records] == [{"role": "user", "content": "Write a haiku."},
                                                    {"role": "user", "content": "Name a colour."},
                                                    {"role": "user", "content": "2+2?"}]
    assert records[0]["meta"]["dataset"] == "selfinstruct"


def test_system_prompts_are_kept_in_every_chat_format(tmp_path):
    rows = [{"conversations": [{"from": "system", "value": "You are terse."}, {"from": "human", "value": "Hi"},
                               {"from": "gpt", "value": "Hi."}]},
            {"system": "You are terse.", "conversations": [{"from": "human", "value": "Hi"},
                                                           {"from": "gpt", "value": "Hi."}]}]
    a, b = list(read_rows(rows))
    assert a["messages"] == b["messages"] and a["messages"][0] == {"role": "system", "content": "You are terse."}
    write_records([a], tmp_path / "a.jsonl", "alpaca")
    assert read_jsonl(tmp_path / "a.jsonl") == [{"instruction": "Hi", "input": "", "output": "Hi.",
                                                 "system": "You are terse."}]
