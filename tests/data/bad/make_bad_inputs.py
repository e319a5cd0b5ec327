"""Write the bad-input corpus (run from this directory: python make_bad_inputs.py).

Each file is one kind of damage real datasets have. ``EXPECTED`` in tests/io/test_bad_inputs.py says what
reading each must give: how many records, how many rejects, and words of the reject reason."""

import csv
import gzip
import io
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

HERE = Path(__file__).parent
GOOD = {"instruction": "Name a fruit.", "input": "", "output": "An apple."}
GOOD2 = {"instruction": "Name a colour.", "input": "", "output": "Blue."}


def line(value) -> bytes:
    return json.dumps(value, ensure_ascii=False).encode("utf-8")


def jsonl(*lines: bytes) -> bytes:
    return b"\n".join(lines) + b"\n"


def gz(data: bytes, cut: float | None = None) -> bytes:
    packed = gzip.compress(data, mtime=0)
    return packed[: int(len(packed) * cut)] if cut else packed


def csv_bytes(rows: list[list[str]]) -> bytes:
    out = io.StringIO()
    csv.writer(out).writerows(rows)
    return out.getvalue().encode("utf-8")


def parquet_bytes(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


many = b"".join(line({"instruction": f"Question {i}?", "input": "", "output": f"Answer {i}."}) + b"\n"
                for i in range(300))
FILES = {
    "truncated_line.jsonl": jsonl(line(GOOD), b'{"instruction": "Cut off', line(GOOD2)),
    "mixed_encodings.jsonl": jsonl(line(GOOD), '{"instruction": "caf\u00e9", "output": "x"}'.encode("latin-1"),
                                   line(GOOD2)),
    "bom.jsonl": b"\xef\xbb\xbf" + jsonl(line(GOOD), line(GOOD2)),
    "bom.json": b"\xef\xbb\xbf" + json.dumps([GOOD, GOOD2]).encode(),
    "nul_bytes.jsonl": jsonl(line(GOOD), b'{"instruction": "a\x00b", "output": "raw NUL in a string"}',
                             line({"instruction": "escaped \u0000 NUL", "output": "kept"})),
    "deeply_nested.jsonl": jsonl(line(GOOD), b'{"instruction": "deep", "output": "x", "meta": ' + b"[" * 100_000
                                 + b"]" * 100_000 + b"}", line(GOOD2)),
    "wrong_types.jsonl": jsonl(line({"instruction": 7, "output": "x"}), line({"instruction": "x", "output": ["a"]}),
                               line({"messages": {"role": "user"}}), line({"messages": [{"role": "user", "content": 5}]}),
                               line({"instruction": None, "output": "x"}), line(GOOD)),
    "duplicate_ids.jsonl": jsonl(line({**GOOD, "id": "same"}), line({**GOOD2, "id": "same"})),
    "empty_conversation.jsonl": jsonl(line({"messages": []}), line(GOOD)),
    "roles_out_of_order.jsonl": jsonl(
        line({"messages": [{"role": "assistant", "content": "Hi"}, {"role": "user", "content": "?"}]}),
        line({"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"},
                           {"role": "assistant", "content": "c"}]}),
        line({"messages": [{"role": "wizard", "content": "a"}, {"role": "assistant", "content": "b"}]})),
    "tool_calls.jsonl": jsonl(line({"messages": [
        {"role": "user", "content": "Weather in Oslo?"},
        {"role": "assistant", "content": "", "tool_calls": [{"id": "c1", "type": "function", "function": {
            "name": "weather", "arguments": "{\"city\": \"Oslo\"}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "{\"temp\": 3}"},
        {"role": "assistant", "content": "3 degrees."}]}),
        line({"messages": [{"role": "user", "content": "x"},
                           {"role": "assistant", "content": "", "tool_calls": "not a list"}]})),
    "image_parts.jsonl": jsonl(line({"messages": [
        {"role": "user", "content": [{"type": "text", "text": "What is this?"},
                                     {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]},
        {"role": "assistant", "content": "A cat."}]}), line(GOOD)),
    "other_schema.parquet": parquet_bytes(pa.table({"question_id": [1, 2], "embedding": [[0.1, 0.2], [0.3, 0.4]]})),
    "embedded_newlines.csv": csv_bytes([["instruction", "input", "output"],
                                        ["Write two lines.", "", "Line one.\nLine two."],
                                        ["Quote \"this\".", "", "Done, with a comma."]]),
    "truncated_midstream.jsonl.gz": gz(many, cut=0.5),
    "lone_surrogate.jsonl": jsonl(b'{"instruction": "hi \\ud800 there", "output": "x"}',
                                  b'{"instruction": "pair \\ud83d\\ude00 ok", "output": "x"}'),
    "binary.jsonl": bytes(range(256)) * 8,
    "empty.jsonl": b"",
    "blank_lines.jsonl": b"\n\n   \n\t\n",
    "not_objects.jsonl": jsonl(b"42", b'"a string"', b"null", b"[1, 2]", line(GOOD)),
    "wrong_field_names.jsonl": jsonl(line({"q": "?", "a": "!"}), line({"question": "?", "answer": "!"})),
    "crlf.jsonl": line(GOOD) + b"\r\n" + line(GOOD2) + b"\r\n",
    "scalar.json": b"42",
    "truncated.json": json.dumps([GOOD, GOOD2]).encode()[:-20],
    "more_cells.csv": b"instruction,input,output\nName a fruit.,,An apple.\nA,,B,extra\n",
    "bad_bytes.csv": b"instruction,input,output\ncaf\xe9,,x\nName a tree.,,Oak.\n",
    "nan_values.jsonl": jsonl(b'{"instruction": "x", "output": NaN}', b'{"instruction": "x", "output": "y", '
                              b'"scores": {"s": NaN}}'),
    "preference_half.jsonl": jsonl(line({"prompt": "Pick one.", "chosen": "A"}),
                                   line({"prompt": "Pick one.", "chosen": "A", "rejected": "B"})),
    "null_fields.jsonl": jsonl(line({"instruction": "x", "output": None}), line({"messages": None})),
    "whitespace_only.jsonl": jsonl(line({"instruction": "   ", "output": "\n\t"}), line(GOOD)),
    "utf16.jsonl": jsonl(line(GOOD), line(GOOD2)).decode().encode("utf-16"),
    "sharegpt_unknown_from.jsonl": jsonl(line({"conversations": [{"from": "human", "value": "Hi"},
                                                                 {"from": "robot", "value": "Hello"}]})),
}
MIXED_DIR = {"a.jsonl": jsonl(line(GOOD), b"{broken"), "b.csv": csv_bytes([["instruction", "input", "output"],
                                                                          ["Name a tree.", "", "Oak."]]),
             "c.parquet": parquet_bytes(pa.table({"instruction": ["Name a bird."], "input": [""], "output": ["Owl."]})),
             "d.json": json.dumps([GOOD2]).encode(), "notes.md": b"# not data\n"}


def main() -> None:
    for name, data in FILES.items():
        (HERE / name).write_bytes(data)
    mixed = HERE / "mixed_dir"
    mixed.mkdir(exist_ok=True)
    for name, data in MIXED_DIR.items():
        (mixed / name).write_bytes(data)
    print(len(FILES) + 1, "kinds")


if __name__ == "__main__":
    main()
