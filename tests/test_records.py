import pytest

from dataflywheel.records import RecordError, instruction_text, make_record, record_id, response_text, validate_record


def chat(user, assistant):
    return [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]


def test_id_depends_on_text_only():
    a = make_record(chat("Hi", "Hello"), meta={"source": "a.jsonl:1"})
    b = make_record(chat("Hi", "Hello"), meta={"source": "b.jsonl:9"}, scores={"x": 1.0})
    c = make_record(chat("Hi", "Hello!"))
    assert a["id"] == b["id"] != c["id"]
    assert a["id"] == record_id({"messages": chat("Hi", "Hello")})


def test_preference_views():
    record = make_record([{"role": "user", "content": "Q"}], chosen={"role": "assistant", "content": "good"},
                         rejected={"role": "assistant", "content": "bad"})
    assert instruction_text(record) == "Q"
    assert response_text(record) == "good"


@pytest.mark.parametrize("record, message", [
    ({"messages": []}, "non-empty list"),
    ({"messages": [{"role": "robot", "content": "x"}]}, "role 'robot'"),
    ({"messages": [{"role": "user", "content": 3}]}, "content must be a string, got int"),
    ({"messages": [{"role": "user"}]}, "missing 'content'"),
    ({"messages": chat("a", "b"), "scores": {"q": "high"}}, "scores['q'] must be a number"),
    ({"messages": chat("a", "b"), "colour": 1}, "unknown record field"),
    ({"messages": [{"role": "user", "content": "a"}], "chosen": {"role": "user", "content": "b"},
      "rejected": {"role": "assistant", "content": "c"}}, "chosen must be an assistant turn"),
    ({"messages": [{"role": "user", "content": "a", "tool_calls": [{"function": {"name": "f", "arguments": "{}"}}]}]},
     "messages[0] has tool_calls but role 'user'"),
    ({"messages": [{"role": "user", "content": "a"},
                   {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "f"}}]}]},
     "messages[1].tool_calls[0] must be {'function': {'name': str, 'arguments': str}}"),
])
def test_validation_names_the_field(record, message):
    with pytest.raises(RecordError, match=message.replace("[", r"\[").replace("]", r"\]")):
        validate_record(record)


def test_dumps_keeps_nan_and_none_apart():
    import math

    from dataflywheel.records import dumps, loads

    record = {"messages": [{"role": "user", "content": "say null"}], "scores": {"ifd": float("nan"), "x": 1.5},
              "meta": {"input": None, "weight": float("inf")}}
    back = loads(dumps(record))
    assert math.isnan(back["scores"]["ifd"]) and back["scores"]["x"] == 1.5
    assert back["meta"] == {"input": None, "weight": float("inf")}
    plain = {"messages": [{"role": "user", "content": "hi"}], "meta": {"k": [1, 2.5, "é"]}}
    assert dumps(plain) == '{"messages":[{"role":"user","content":"hi"}],"meta":{"k":[1,2.5,"é"]}}'


def test_ids_are_the_sha256_of_the_canonical_standard_library_json():
    """Ids must not change when the serialiser is sped up: escapes, non-ASCII, separators, key order."""
    import hashlib
    import json

    texts = ["plain", 'quote " and \\ backslash', "tab\tnewline\ncr\r bell\x07 nul\x00 del\x7f",
             "é ü 中文 \U0001F600", "\u2028 \u2029 \ufeff \u0085", ""]
    for text in texts:
        record = {"messages": [{"role": "user", "content": text}, {"role": "assistant", "content": text[::-1]}],
                  "meta": {"ignored": True}}
        canonical = json.dumps({"messages": record["messages"]}, ensure_ascii=False, sort_keys=True,
                               separators=(",", ":"))
        assert record_id(record) == hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:20], repr(text)


def test_kinds_and_the_prose_operators_compare():
    from dataflywheel.records import conversation_text, is_prompt_only, turn_order_problem

    call = {"role": "assistant", "content": "", "tool_calls": [{"type": "function",
                                                               "function": {"name": "f", "arguments": "{\"x\": 1}"}}]}
    record = make_record([{"role": "user", "content": "Use f."}, call, {"role": "tool", "content": "{\"y\": 2}"},
                          {"role": "assistant", "content": "y is 2."}])
    assert conversation_text(record) == "Use f.\n\ny is 2."
    assert turn_order_problem(record) is None and not is_prompt_only(record)
    assert is_prompt_only(make_record([{"role": "user", "content": "Only a question."}]))
    assert turn_order_problem(make_record([{"role": "assistant", "content": "A plain document."}])) is None
