"""Property-based round trips: records written in every format and container read back the same (text, id,
scores, lineage, meta), and record ids are stable content hashes."""

import json
import math
import re

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from dataflywheel.io import ReadReject, read_records, write_records
from dataflywheel.records import make_record, record_id

SETTINGS = settings(max_examples=60, deadline=None, database=None, derandomize=True,  # the same examples every run
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
HH_MARKER = re.compile(r"\n\n(Human|Assistant): ")

# ---- strategies -------------------------------------------------------------------------------------------

SPECIAL = ["\x00", "\n", "\r\n", "\r", "\t", '"', "'", "\\", "😀", "\u2028", "\ufeff", "{{ 7*7 }}", "{% for %}",
           "<script>", ",", "null", "\n\n", " ", ""]
text = st.one_of(
    st.text(max_size=30),
    st.lists(st.one_of(st.sampled_from(SPECIAL), st.text(max_size=5)), max_size=6).map("".join),
    st.builds(lambda c, n: c * n, st.characters(codec="utf-8"), st.integers(10_000, 120_000)),  # very long
)
json_value = st.recursive(
    st.none() | st.booleans() | st.integers(-2**53, 2**53) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8)
meta_key = st.text(max_size=8).map(lambda k: "m_" + k)
score = st.floats(allow_nan=True, allow_infinity=True) | st.integers(-1000, 1000)
# score names without control characters: a datasets dir drops a struct field named "\x00" (container limit)
scores = st.dictionaries(st.text(st.characters(exclude_categories=("Cc", "Cs")), min_size=1, max_size=8), score,
                         max_size=3)
lineage = st.lists(st.fixed_dictionaries(
    {"step": st.text(max_size=8), "op": st.text(max_size=8), "parents": st.lists(st.text(max_size=20), max_size=2)},
    optional={"details": st.dictionaries(st.text(max_size=6), json_value, max_size=3)}), max_size=3)


system_text = text.filter(bool)  # an empty system prompt is no system prompt in alpaca and sharegpt (by design)


def turn(role, content=text):
    return content.map(lambda c: {"role": role, "content": c})


@st.composite
def sft(draw, system=True, tools=False, single=False):
    turns = [draw(turn("system", system_text))] if system and draw(st.booleans()) else []
    for _ in range(1 if single else draw(st.integers(1, 3))):
        turns.append(draw(turn("user")))
        if tools and draw(st.booleans()):
            name = draw(st.text(min_size=1, max_size=10))
            arguments = json.dumps(draw(st.dictionaries(st.text(max_size=5), json_value, max_size=2)),
                                   ensure_ascii=False)
            turns.append({"role": "assistant", "content": "", "tool_calls": [
                {"type": "function", "function": {"name": name, "arguments": arguments}}]})
            turns.append(draw(turn("tool")))
        turns.append(draw(turn("assistant")))
    return {"messages": turns}


@st.composite
def prompt_only(draw, system=True):
    system_turns = [draw(turn("system", system_text))] if system and draw(st.booleans()) else []
    return {"messages": system_turns + [draw(turn("user"))]}


@st.composite
def pair(draw, system=True, multi=True, content=text):
    record = draw(sft(system=system)) if multi else {"messages": []}
    if not multi or draw(st.booleans()):
        record["messages"] = record["messages"][:-1] if multi else [draw(turn("user", content))]
    else:
        record["messages"] = [m for m in record["messages"]] + [draw(turn("user"))]
    record["chosen"], record["rejected"] = draw(turn("assistant", content)), draw(turn("assistant", content))
    return record


hh_text = text.filter(lambda t: not HH_MARKER.search(t) and not HH_MARKER.search("\n" + t[:1]))


@st.composite
def hh_pair(draw):
    turns = []
    for _ in range(draw(st.integers(0, 2))):
        turns += [draw(turn("user", hh_text)), draw(turn("assistant", hh_text))]
    turns.append(draw(turn("user", hh_text)))
    return {"messages": turns, "chosen": draw(turn("assistant", hh_text)),
            "rejected": draw(turn("assistant", hh_text))}


SHAPES = {  # format: the kinds of record it holds (a format refuses the others, by design)
    "messages": [sft(tools=True), prompt_only()],
    "sharegpt": [sft(tools=True), prompt_only(), pair()],
    "alpaca": [sft(), prompt_only(), pair()],
    "trl_messages": [pair()],
    "trl": [pair(system=False, multi=False)],
    "hh_rlhf": [hh_pair()],
    "completion": [sft(system=False, single=True)],
    "kto": [sft(system=False, single=True)],
    "text": [turn("assistant").map(lambda t: {"messages": [t]})],
}
CONTAINERS = {"jsonl": "out.jsonl", "jsonl.gz": "out.jsonl.gz", "json": "out.json", "json.gz": "out.json.gz",
              "parquet": "out.parquet", "csv": "out.csv", "csv.gz": "out.csv.gz", "hf": "out_hf"}


def meta_for(container):
    """Meta as each container holds it: any JSON in JSON files; the same nested shape in every row of a
    columnar file (a column has one type); text cells in CSV (a CSV cell is text)."""
    if container.startswith("json"):
        return st.dictionaries(meta_key, json_value, max_size=3)
    if container.startswith("csv"):
        return st.fixed_dictionaries({"m_tag": st.text(max_size=10)})
    return st.fixed_dictionaries({"m_tag": st.text(max_size=10), "m_n": st.integers(-2**53, 2**53),
                                  "m_nested": st.fixed_dictionaries({"a": st.text(max_size=5),
                                                                     "b": st.lists(st.integers(0, 9), max_size=3)})})


@st.composite
def dataset(draw, container):
    fmt = draw(st.sampled_from(sorted(SHAPES)))
    # CSV has no null: an empty cell cannot tell "no answer" or "no pair" from an empty text, so one kind a file
    kinds = [draw(st.sampled_from(SHAPES[fmt]))] if container.startswith("csv") else SHAPES[fmt]
    records = []
    for _ in range(draw(st.integers(1, 3))):
        shape = draw(st.one_of(kinds))
        meta = draw(meta_for(container))
        if fmt == "kto":
            meta["label"] = draw(st.booleans())
        records.append(make_record(shape["messages"], chosen=shape.get("chosen"), rejected=shape.get("rejected"),
                                   meta=meta, scores=draw(scores), lineage=draw(lineage)))
    return fmt, records


# ---- checks -----------------------------------------------------------------------------------------------


def same_number(a, b):
    return (math.isnan(a) and math.isnan(b)) or a == b


def assert_same(back, original):
    assert back["id"] == original["id"]
    for key in ("messages", "chosen", "rejected", "lineage"):
        assert back.get(key) == original.get(key), key
    assert set(back["scores"]) == set(original["scores"])
    assert all(same_number(back["scores"][k], original["scores"][k]) for k in original["scores"])
    assert {k: v for k, v in back["meta"].items() if k not in ("source", "alpaca")} == original["meta"]


def roundtrip(tmp_path, fmt, records, name):
    path = tmp_path / name
    write_records(records, path, fmt, with_id=True, with_scores=True, with_lineage=True)
    items = list(read_records(path, fmt))
    rejects = [i for i in items if isinstance(i, ReadReject)]
    assert not rejects, rejects[0].reason
    assert len(items) == len(records)
    for back, original in zip(items, records):
        assert_same(back, original)


@pytest.mark.parametrize("container", CONTAINERS)
def test_write_then_read_gives_the_same_records(tmp_path_factory, container):
    @settings(SETTINGS, max_examples=40)  # per container: 8 x 40 examples
    @given(dataset(container))
    @example(("text", [make_record([{"role": "assistant", "content": ""}])]))  # .json.gz/.csv.gz were written plain
    @example(("completion", [make_record([{"role": "user", "content": ""}, {"role": "assistant", "content": "x"}],
                                         meta={"m_tag": ""}),  # an empty prompt cell was "invalid JSON" in CSV
                             make_record([{"role": "user", "content": '[1] {"a": "b"}'},
                                          {"role": "assistant", "content": "x"}], meta={"m_tag": ""},
                                         scores={"s": 1.0})]))  # text that looks like JSON stayed text
    @example(("kto", [make_record([{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
                                  meta={"m_tag": "", "label": False})]))  # a KTO label in CSV was unreadable text
    def check(case):
        fmt, records = case
        roundtrip(tmp_path_factory.mktemp(container), fmt, records, CONTAINERS[container])

    check()


# ---- ids ---------------------------------------------------------------------------------------------------


def shuffled_keys(value, draw):
    if isinstance(value, dict):
        keys = draw(st.permutations(list(value)))
        return {k: shuffled_keys(value[k], draw) for k in keys}
    if isinstance(value, list):
        return [shuffled_keys(v, draw) for v in value]
    return value


@SETTINGS
@given(st.one_of(sft(tools=True), pair()), st.data())
def test_ids_are_stable_and_ignore_key_order_meta_and_scores(shape, data):
    a = make_record(shape["messages"], chosen=shape.get("chosen"), rejected=shape.get("rejected"))
    reordered = shuffled_keys(shape, data.draw)
    b = make_record(reordered["messages"], chosen=reordered.get("chosen"), rejected=reordered.get("rejected"),
                    meta=data.draw(st.dictionaries(meta_key, json_value, max_size=2)), scores=data.draw(scores))
    assert a["id"] == b["id"] == record_id(json.loads(json.dumps(shape)))
    assert re.fullmatch(r"[0-9a-f]{20}", a["id"])


@SETTINGS
@given(st.one_of(sft(tools=True), pair()), st.one_of(sft(tools=True), pair()))
@example({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]},
         {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b "}]})
@example({"messages": [{"role": "user", "content": "ab"}, {"role": "assistant", "content": ""}]},
         {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]})
def test_distinct_content_gives_distinct_ids(one, other):
    a = make_record(one["messages"], chosen=one.get("chosen"), rejected=one.get("rejected"))
    b = make_record(other["messages"], chosen=other.get("chosen"), rejected=other.get("rejected"))
    same = all(a.get(k) == b.get(k) for k in ("messages", "chosen", "rejected"))
    assert (a["id"] == b["id"]) == same
