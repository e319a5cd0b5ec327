import pytest

from dataflywheel.ops import get_operator
from dataflywheel.records import make_record


def rec(user, assistant):
    return make_record([{"role": "user", "content": user}, {"role": "assistant", "content": assistant}])


def scan_of(records):
    return lambda: iter([records[:2], records[2:]])


def test_normalize_nfkc_and_whitespace_keeps_code_indentation():
    op = get_operator("enhance.normalize")()
    out = op.map(rec("ｆｕｌｌ\u00a0width  please \r\n\n\n\nthanks", "def f():\n    return  1   \n"))
    assert out["messages"][0]["content"] == "full width please\n\nthanks"
    assert out["messages"][1]["content"] == "def f():\n    return 1"


def test_exact_dedup_ignores_case_punctuation_and_spacing():
    records = [rec("Hi there!", "Hello."), rec("hi  there", "HELLO"), rec("Hi there", "Goodbye"), rec("Q", "Hello.")]
    selection = get_operator("select.exact_dedup")().select(scan_of(records))
    assert selection.rejected == {1: f"exact duplicate of {records[0]['id']} (conversation)"}
    by_response = get_operator("select.exact_dedup")(get_operator("select.exact_dedup").Config(field="response"))
    assert set(by_response.select(scan_of(records)).rejected) == {1, 3}


def test_length_filter_reasons():
    op = get_operator("select.length_filter")(
        get_operator("select.length_filter").Config(min_instruction_words=2, min_response_words=2, max_response_words=4))
    assert op.reject_reason(rec("one", "a b c")) == "instruction too short: 1 words < 2"
    assert op.reject_reason(rec("two words", "a")) == "response too short: 1 words < 2"
    assert op.reject_reason(rec("two words", "a b c d e")) == "response too long: 5 words > 4"
    assert op.reject_reason(rec("two words", "a b c")) is None


@pytest.mark.model
def test_length_filter_token_bounds():
    cls = get_operator("select.length_filter")
    op = cls(cls.Config(max_response_tokens=5))
    assert op.reject_reason(rec("Say hi.", "hi")) is None
    reason = op.reject_reason(rec("Say hi.", "antidisestablishmentarianism is long"))
    assert reason.startswith("response too long:") and reason.endswith("tokens > 5")
