"""PII redaction: precision and recall per type on a labelled set of realistic strings, and the operator."""

import json
import pickle
from collections import Counter
from pathlib import Path

import pytest

from dataflywheel.ops import get_operator
from dataflywheel.ops.enhance.pii_patterns import TYPES, card_ok, find_pii, iban_ok, luhn_ok
from dataflywheel.records import make_record
from tests.conftest import run_steps

LABELLED = Path(__file__).resolve().parents[1] / "data" / "pii_labelled.jsonl"
FLOOR = {"EMAIL": (0.95, 0.95), "PHONE": (0.9, 0.9), "IP_ADDRESS": (0.9, 0.9), "CREDIT_CARD": (0.95, 0.95),
         "IBAN": (0.95, 0.95), "SECRET": (0.9, 0.9)}
"""(precision, recall) floors; measured 1.0 / 1.0 for every type on the set (it was written with the recognizers,
and a second batch written blind afterwards had 1 missed and 2 false phone/IP findings, since fixed)."""


def labelled() -> list[dict]:
    return [json.loads(line) for line in LABELLED.read_text(encoding="utf-8").splitlines() if line.strip()]


def per_type_scores(rows: list[dict], spans_of) -> dict[str, dict[str, float]]:
    """Precision and recall per type: a labelled value is found when a span of its type overlaps it; a span of a
    type that overlaps no labelled value of that type is a false positive. ``spans_of(text)``: (start, end, type)."""
    found, missed, right, wrong = Counter(), Counter(), Counter(), Counter()
    for row, spans in zip(rows, map(spans_of, (r["text"] for r in rows))):
        gold = []
        for kind, value in row["pii"]:
            start = row["text"].index(value)
            gold.append((start, start + len(value), kind))
        for start, end, kind in gold:
            hit = any(k == kind and s < end and start < e for s, e, k in spans)
            (found if hit else missed)[kind] += 1
        for s, e, k in spans:
            hit = any(k == kind and s < end and start < e for start, end, kind in gold)
            (right if hit else wrong)[k] += 1
    out = {}
    for kind in TYPES:
        predicted, actual = right[kind] + wrong[kind], found[kind] + missed[kind]
        out[kind] = {"precision": right[kind] / predicted if predicted else float("nan"),
                     "recall": found[kind] / actual if actual else float("nan"),
                     "predicted": predicted, "labelled": actual, "false_positives": wrong[kind], "missed": missed[kind]}
    return out


def ours(text: str) -> list[tuple[int, int, str]]:
    return [(s.start, s.end, s.type) for s in find_pii(text)]


def test_labelled_set_has_every_type_and_tricky_negatives():
    rows = labelled()
    kinds = Counter(kind for r in rows for kind, _ in r["pii"])
    assert set(kinds) == set(TYPES) and min(kinds.values()) >= 10, kinds
    assert sum(not r["pii"] for r in rows) >= 60  # versions, dates, ISBNs, UUIDs, prices, order numbers, SHAs ...


def test_precision_and_recall_per_type():
    scores = per_type_scores(labelled(), ours)
    for kind, s in scores.items():
        print(f"{kind:12s} precision {s['precision']:.3f} recall {s['recall']:.3f} "
              f"({s['labelled']} labelled, {s['false_positives']} false positives, {s['missed']} missed)")
    for kind, (precision, recall) in FLOOR.items():
        assert scores[kind]["precision"] >= precision, (kind, scores[kind])
        assert scores[kind]["recall"] >= recall, (kind, scores[kind])


def test_validators():
    assert luhn_ok("79927398713") and not luhn_ok("79927398710")
    assert card_ok("4111111111111111") and not card_ok("4111111111111112")
    assert not card_ok("9780306406157")  # an ISBN passes Luhn-like checks but is no card network's number
    assert iban_ok("GB82WEST12345698765432") and not iban_ok("GB82WEST12345698765433")
    assert not iban_ok("GB82WEST1234569876543")  # wrong length for GB


def rec(user, assistant, **extra):
    return make_record([{"role": "user", "content": user}, {"role": "assistant", "content": assistant, **extra}])


def test_redact_replaces_with_typed_placeholders_everywhere():
    op = get_operator("enhance.pii")()
    call = {"tool_calls": [{"type": "function", "function": {
        "name": "pay", "arguments": json.dumps({"to": "ana@bank.pt", "card": 4111111111111111, "n": 3})}}]}
    record = rec("Mail ana@bank.pt or call (415) 555-0132.",
                 "```bash\nexport TOKEN=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\ncurl 127.0.0.1:8080\n```", **call)
    out = op.map(record)
    assert out["messages"][0]["content"] == "Mail <EMAIL> or call <PHONE>."
    assert out["messages"][1]["content"] == "```bash\nexport TOKEN=<SECRET>\ncurl 127.0.0.1:8080\n```"  # code too
    assert json.loads(out["messages"][1]["tool_calls"][0]["function"]["arguments"]) == {
        "to": "<EMAIL>", "card": "<CREDIT_CARD>", "n": 3}
    assert op.counters == Counter({"redacted EMAIL": 2, "redacted PHONE": 1, "redacted SECRET": 1,
                                   "redacted CREDIT_CARD": 1, "records with PII": 1})
    clean = rec("What is 2 + 2?", "4")
    assert op.map(clean) is clean  # unchanged records pass as they are (no new id, no lineage)


def test_types_and_placeholder_options():
    cls = get_operator("enhance.pii")
    op = cls(cls.Config(types=["EMAIL"], placeholder="[{type} removed]"))
    out = op.map(rec("a@b.io, 203.0.113.9", "ok"))
    assert out["messages"][0]["content"] == "[EMAIL removed], 203.0.113.9"
    with pytest.raises(ValueError):
        cls.Config(placeholder="<{kind}>")


def test_keep_reserved_leaves_example_and_private_addresses():
    cls = get_operator("enhance.pii")
    text = ("email = 'someone@example.com'; ip = '192.168.1.1'; docs 2001:db8::1 and 203.0.113.9; "
            "real: ana@bank.pt from 45.33.32.156, test@mail.test")
    assert cls(cls.Config(keep_reserved=True)).map(rec(text, "ok"))["messages"][0]["content"] == (
        "email = 'someone@example.com'; ip = '192.168.1.1'; docs 2001:db8::1 and 203.0.113.9; "
        "real: <EMAIL> from <IP_ADDRESS>, test@mail.test")
    assert cls().map(rec(text, "ok"))["messages"][0]["content"].count("<") == 7  # the default redacts them all


def test_reject_action_rejects_naming_the_types():
    from dataflywheel.pipeline.apply import apply_mapper

    cls = get_operator("enhance.pii")
    op = cls(cls.Config(action="reject"))
    batch = [rec("IBAN DE89 3704 0044 0532 0130 00, mail x@y.com and z@y.com", "ok"),
             rec("version 1.2.3.4, ISBN 978-3-16-148410-0", "ok")]
    items = apply_mapper(op, "pii", batch)
    assert items[0].reason == "contains PII: EMAIL x2, IBAN x1"
    # rejected/ keeps the redacted copy under the input's id: rejects travel with the output
    assert items[0].record["id"] == batch[0]["id"]
    assert items[0].record["messages"][0]["content"] == "IBAN <IBAN>, mail <EMAIL> and <EMAIL>"
    assert items[1].reason is None and items[1].record is batch[1]
    assert pickle.loads(pickle.dumps(op)).config.action == "reject"
    assert dict(op.counters) == {"found EMAIL": 2, "found IBAN": 1, "records with PII": 1}
    original = cls(cls.Config(action="reject", rejected_copy="original"))
    assert apply_mapper(original, "pii", batch[:1])[0].record == batch[0]


def test_rejected_pii_is_redacted_in_rejected(tmp_path):
    """The redacted copy covers meta (extra input columns, the alpaca split) too. The run's checkpoints still
    hold the input as read (documented on rejected_copy)."""
    rows = [{"instruction": "Write to jo@bank.pt about card 5555 5555 5555 4444", "output": "Done.",
             "contact": "jo@bank.pt"},
            {"instruction": "Say hi", "output": "hi"}]
    _, manifest, out, rejects = run_steps(tmp_path, [{"op": "enhance.pii", "action": "reject"}], rows)
    assert [r["messages"][0]["content"] for r in out] == ["Say hi"]
    assert len(rejects) == 1 and rejects[0]["reason"] == "contains PII: CREDIT_CARD x1, EMAIL x1"
    stored = json.dumps(rejects)
    assert "jo@bank.pt" not in stored and "5555 5555" not in stored and "<EMAIL>" in stored


def test_redaction_covers_meta_and_earlier_lineage():
    from dataflywheel.records import make_record

    record = make_record([{"role": "user", "content": "Mail ana@bank.pt"}, {"role": "assistant", "content": "ok"}],
                         meta={"contact": "ana@bank.pt", "n": 3},
                         lineage=[{"op": "enhance.rewrite", "step": "rewrite", "kind": "mapper", "parents": ["x"],
                                   "original": "Mail ana@bank.pt please"}])
    cls = get_operator("enhance.pii")
    op = cls()
    out = op.map(record)
    assert "ana@bank.pt" not in json.dumps(out)
    assert out["meta"] == {"contact": "<EMAIL>", "n": 3} and out["lineage"][0]["original"] == "Mail <EMAIL> please"
    assert dict(op.counters) == {"redacted EMAIL": 1, "records with PII": 1}  # the turns' findings are counted


def test_pii_steps_in_a_run(tmp_path):
    rows = [{"instruction": "My email is jo@example.org", "output": "Noted."},
            {"instruction": "Say hi", "output": "hi"},
            {"instruction": "Card 5555 5555 5555 4444 please", "output": "ok"}]
    _, manifest, out, rejects = run_steps(tmp_path, [{"op": "enhance.pii"}], rows)
    assert [r["messages"][0]["content"] for r in out] == ["My email is <EMAIL>", "Say hi", "Card <CREDIT_CARD> please"]
    assert out[0]["lineage"][-1]["op"] == "enhance.pii" and not out[1].get("lineage")
    step = manifest["steps"][-1]
    assert step["counters"] == {"redacted EMAIL": 1, "redacted CREDIT_CARD": 1, "records with PII": 2}
    (tmp_path / "reject").mkdir()
    _, manifest, out, rejects = run_steps(tmp_path / "reject", [{"op": "enhance.pii", "action": "reject"}], rows)
    assert len(out) == 1 and sorted(r["reason"] for r in rejects) == ["contains PII: CREDIT_CARD x1",
                                                                      "contains PII: EMAIL x1"]
