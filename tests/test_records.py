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
