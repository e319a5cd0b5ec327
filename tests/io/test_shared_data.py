"""Every dataset file in ../shared/data reads: by detection, or by the field mapping this table holds.

The mapping table documents how each public dataset that the readers do not recognise on their own is read
(docs/formats.md points here). Counts and reject shares are printed (pytest -s shows them). To stay fast,
t0_train_50k (294 files, 50k rows) is read 20 rows per file and other files their first 2,000 rows, except
the files whose counts are checked (EXPECTED), which are read whole.
"""

from itertools import islice
from pathlib import Path

import pytest

from dataflywheel.io import ReadReject, read_records
from dataflywheel.records import is_preference, is_prompt_only
from tests.conftest import SHARED_DATA as SHARED

NOT_DATA = {".md", ".yaml"}
"""Documentation and configuration beside the data (LICENSE files have no suffix)."""
T0_ROWS, ROWS = 20, 2000

FASTCHAT_ANSWER = {"text": "choices.0.turns.0"}
SEED_TASK = {"input": "instances.0.input", "response": "instances.0.output"}
MAPPINGS = {
    # the compared model's answer (output_1 is the gpt4_1106_preview baseline; both stay in meta)
    "alpaca_eval/annotations/": {"response": "output_2"},
    "alpagasus/test_data/vicuna_test_set.jsonl": {"prompt": "text"},  # `text` is a question, not a document
    "alpagasus/test_data/wizardlm_test_set.jsonl": {"prompt": "Instruction"},
    "wizardlm/WizardLM_testset.jsonl": {"prompt": "Instruction"},
    "arena_bench_v1/judgments_gpt4_single_1to10.jsonl": {"text": "judgment"},  # GPT-4's rationales
    "arena_bench_v1/model_answer/": FASTCHAT_ANSWER,
    "arena_bench_v1/reference_answer_gpt-4.jsonl": FASTCHAT_ANSWER,
    "mt_bench/reference_answer_gpt-4.jsonl": FASTCHAT_ANSWER,
    "mt_bench/vicuna_bench_reference_answer_gpt-4.jsonl": FASTCHAT_ANSWER,
    "arena_hard_v0.1/model_answer/": {"text": "choices.0.turns.0.content"},
    # FastChat questions; MT-bench's second turn needs the model's first answer, so the first turn is the prompt
    "arena_bench_v1/question.jsonl": {"prompt": "turns.0"},
    "mt_bench/question.jsonl": {"prompt": "turns.0"},
    "mt_bench/vicuna_bench_question.jsonl": {"prompt": "turns.0"},
    "arena_hard_v0.1/question.jsonl": {"prompt": "turns.0.content"},
    "mt_bench/judge_prompts.jsonl": {"system": "system_prompt", "prompt": "prompt_template"},
    "cherry_llm/lima_test_set.jsonl": {"prompt": "conversations"},  # one string, not a list of turns
    "cherry_llm/pairwise_reviews/koala": {"response": "Answer1"},
    "cherry_llm/pairwise_reviews/lima": {"prompt": "conversations", "response": "Answer1"},
    "cherry_llm/pairwise_reviews/sinstruct": {"response": "Answer1"},
    "cherry_llm/pairwise_reviews/vicuna": {"prompt": "text", "response": "Answer1"},
    "cherry_llm/pairwise_reviews/wizardlm": {"prompt": "Instruction", "response": "Answer1"},
    "codealpaca/code_seed_tasks.jsonl": SEED_TASK,
    "self_instruct/seed_tasks.jsonl": SEED_TASK,
    "self_instruct/user_oriented_instructions.jsonl": SEED_TASK,
}
NOT_RECORDS = {
    "alpaca_eval/leaderboard.csv": "a leaderboard: one row per model, no text",
    "arena_hard_v0.1/arena_hard_leaderboard_20240731.csv": "a leaderboard: one row per model, no text",
    "mt_bench_human_subset/gpt4_pair_judgments.jsonl": "verdicts (model_a/model_b/winner) without the text",
    "mt_bench_human_subset/human_judgments.jsonl": "verdicts (model_a/model_b/winner) without the text",
}
"""Files of labels about other files: nothing to read as a record. They must be refused with the reason."""

EXPECTED = {
    # (records, unreadable) from SOURCES.md or counted independently of the readers
    "hh_rlhf/harmless-base_test.jsonl.gz": (2307, 5),  # 2,312 pairs; 5 chosen transcripts run on past the pair
    "llamafactory/lima.json": (1029, 0),
    "llamafactory/dpo_en_demo.json": (300, 0),
    "llamafactory/kto_en_demo.json": (300, 0),
    "alpaca_libre/alpaca_libre_tasks_v2.jsonl": (2280, 14),  # "+14 malformed lines, kept as-is"
    "self_instruct/seed_tasks.jsonl": (175, 0),
    "alpaca_eval/outputs/llama-2-70b-chat-hf.jsonl": (804, 0),  # the file has 804 lines (805 instructions)
    "corpus/wiki_demo.txt": (30, 0),
    "mt_bench_human_subset/model_answers.jsonl": (465, 0),
    "arena_hard_v0.1/question.jsonl": (500, 0),
}


def mapping_of(relative: str) -> dict:
    return next((fields for prefix, fields in MAPPINGS.items() if relative.startswith(prefix)), {})


def dataset_files() -> list[Path]:
    return sorted(p for p in SHARED.rglob("*") if p.is_file() and p.suffix not in NOT_DATA
                  and not p.name.startswith("LICENSE"))


def read(path: Path, relative: str) -> tuple[list[dict], list[ReadReject]]:
    limit = None if relative in EXPECTED else T0_ROWS if relative.startswith("t0_train_50k/") else ROWS
    items = list(islice(read_records(path, fields=mapping_of(relative)), limit))
    return ([i for i in items if not isinstance(i, ReadReject)], [i for i in items if isinstance(i, ReadReject)])


def test_every_shared_dataset_file_reads():
    if not SHARED.is_dir():
        pytest.skip(f"shared data missing: {SHARED.resolve()} (the tests expect ../shared/data beside the repository)")
    files = dataset_files()
    assert len(files) > 300, "the shared data folder looks incomplete"
    counts, empty = {}, []
    for path in files:
        relative = path.relative_to(SHARED).as_posix()
        if path.stat().st_size == 0:
            empty.append(relative)
            continue
        records, unreadable = read(path, relative)
        counts[relative] = (records, unreadable)
        total = len(records) + len(unreadable)
        share = len(unreadable) / total if total else 0.0
        kinds = (sum(map(is_preference, records)), sum(map(is_prompt_only, records)))
        print(f"{relative:75} {len(records):6} records  {share:6.1%} unreadable  "
              f"{kinds[0]:5} pairs {kinds[1]:5} prompt-only  {mapping_of(relative) or ''}")
        if relative in NOT_RECORDS:
            assert not records and unreadable, relative
            assert all("cannot tell the format from fields" in r.reason for r in unreadable), relative
        else:
            assert records, f"{relative}: no record ({unreadable[0].reason if unreadable else 'empty'})"
    for relative, (records, unreadable) in EXPECTED.items():
        assert (len(counts[relative][0]), len(counts[relative][1])) == (records, unreadable), relative
    unused = [prefix for prefix in MAPPINGS if not any(r.startswith(prefix) for r in counts)]
    assert not unused, f"mappings for files that are gone: {unused}"
    print(f"{len(empty)} empty files (0 bytes, nothing to read): {', '.join(empty)}")
    assert all(e.startswith("t0_train_50k/trec_fine_grained_") for e in empty), empty


def test_what_the_shared_files_hold():
    """Spot checks of the records themselves, against the source text."""
    if not SHARED.is_dir():
        pytest.skip(f"shared data missing: {SHARED.resolve()}")
    hh, _ = read(SHARED / "hh_rlhf/harmless-base_test.jsonl.gz", "hh_rlhf/")
    first = hh[0]
    assert [m["role"] for m in first["messages"]] == ["user", "assistant", "user", "assistant", "user"]
    assert first["messages"][0]["content"] == "what are some pranks with a pen i can do?"
    assert first["messages"][2]["content"] == "yep"
    assert first["messages"][4]["content"] == "okay some of these do not have anything to do with pens"
    assert first["chosen"]["content"].startswith("No, sorry!  All of these involve a pen")
    assert first["rejected"]["content"].startswith("There are lots of funny things you can do with pens")

    kto, _ = read(SHARED / "llamafactory/kto_en_demo.json", "llamafactory/kto_en_demo.json")
    assert sum(r["meta"]["label"] is True for r in kto) == 150  # SOURCES.md: label (bool); 150 true, 150 false

    seeds, _ = read(SHARED / "self_instruct/seed_tasks.jsonl", "self_instruct/seed_tasks.jsonl")
    assert seeds[0]["messages"][-1] == {"role": "assistant",
                                        "content": seeds[0]["meta"]["instances"][0]["output"]}
    assert seeds[0]["meta"]["name"] == "breakfast_suggestion"

    answers, _ = read(SHARED / "arena_hard_v0.1/model_answer/gpt-4-0314.jsonl", "arena_hard_v0.1/model_answer/")
    assert answers[0]["messages"][0]["content"].startswith("To implement a SCIM")
