"""synth.evol_instruct: cleaning of evolved instructions, the four elimination rules, the pool of chains (retry
of failed evolutions, survivors evolved next round), seeded method choice, lineage, and a real run with SmolLM2."""

import json
import re
from collections import Counter
from pathlib import Path

import pytest

from dataflywheel.ops import Candidate, OpContext, PoolView, Rejected, get_operator
from dataflywheel.ops.synth.evol_instruct import (COPY_PHRASES, METHODS, clean_evolution, copied_phrase,
                                                  only_stop_words, read_verdict)
from dataflywheel.pipeline.apply import stamp
from dataflywheel.pipeline.run_dir import iter_checkpoint
from dataflywheel.records import instruction_text, make_record
from tests.conftest import OneModel, run_steps

EvolInstruct = get_operator("synth.evol_instruct")
FIXTURE = json.loads((Path(__file__).parent / "fixtures" / "smollm2_evol_outputs.json").read_text("utf-8"))
LONG_SORRY = "I am sorry, but " + " ".join(["here is a long and careful answer about apples"] * 10) + "."


def record(instruction, answer="An answer."):
    return make_record([{"role": "user", "content": instruction}, {"role": "assistant", "content": answer}])


def view(pool, accepted=(), round_=0, target=10):
    return PoolView(scan=lambda: iter([pool]), accepted=list(accepted), round=round_, target=target)


class ScriptedLLM:
    """Answers chats like a model would, by the kind of prompt: evolutions by the given instruction, the
    information-gain check by the second prompt, answers by the instruction; records every prompt."""

    def __init__(self, evolutions=None, verdicts=None, answers=None):
        self.evolutions, self.verdicts, self.answers = evolutions or {}, verdicts or {}, answers or {}
        self.prompts: list[str] = []
        self.params = []

    def chat(self, conversations, params):
        self.params.append(params)
        out = []
        for conversation in conversations:
            assert conversation[0] == {"role": "system", "content": "You are a helpful assistant."}
            text = conversation[-1]["content"]
            self.prompts.append(text)
            given = re.search(r"#(?:The )?Given Prompt#:\n(.*)\n#(?:Rewritten|Created) Prompt#:\n$", text, re.S)
            if given:
                instruction = given.group(1).rsplit("#The Given Prompt#:\n", 1)[-1]
                out.append([self.evolutions.get(instruction, instruction + " Answer in exactly three steps.")])
            elif text.startswith("Here are two Instructions"):
                second = text.split("The Second Prompt: ", 1)[1].split("\nYour Judgement")[0]
                out.append([self.verdicts.get(second, "Not Equal")])
            else:
                out.append([self.answers.get(text, f"A helpful answer to: {text}")])
        return out


def operator(llm, seed=0, **config):
    return EvolInstruct(EvolInstruct.Config(**config), OpContext(seed=seed, models=OneModel(llm, roles=("default",))))


def accept(op, candidate, round_=0):
    """A candidate as the executor would accept it: stamped with its id and lineage."""
    return stamp(op, "evol", candidate, round_)


# ---- cleaning and reading of model output ---------------------------------------------------------


def test_clean_evolution_strips_the_prompt_layout_fences_and_quotes():
    assert clean_evolution("#Rewritten Prompt#:\nExplain photosynthesis in three steps.")[0] == \
        "Explain photosynthesis in three steps."
    assert clean_evolution('**Created Prompt:** "Name a rare bird of Madagascar."')[0] == \
        "Name a rare bird of Madagascar."
    assert clean_evolution("```\nList four prime numbers above 50.\n```")[0] == "List four prime numbers above 50."
    # an echo of the given prompt before the rewrite, and a new example after it
    echoed = ("#The Given Prompt#:\nHow do I make juice?\n#Rewritten Prompt#:\nHow do I make apple juice without a "
              "juicer?\n\n#The Given Prompt#:\nName a fruit.\n#Rewritten Prompt#:\nName a tropical fruit.")
    text, notes = clean_evolution(echoed)
    assert text == "How do I make apple juice without a juicer?"
    assert "text before the labelled instruction (dropped)" in notes
    assert "text after the labelled instruction (cut)" in notes
    preamble = "Sure! Here is the rewritten prompt:\n#Rewritten Prompt#: Explain tides."
    assert clean_evolution(preamble)[0] == "Explain tides."
    continued = "Explain tides to a child.\n\n#The Given Prompt#:\nName a fruit."
    assert clean_evolution(continued)[0] == "Explain tides to a child."
    # fences inside the instruction hold its input and stay
    data = 'Sum the values below.\n```json\n{"a": 1, "b": 2}\n```'
    assert clean_evolution(data) == (data, [])
    two = "```\nx = 1\n```\nWhat do the two snippets print?\n```\nprint(2)\n```"
    assert clean_evolution(two) == (two, [])
    assert clean_evolution("#Rewritten Prompt#:\n")[0] == "" and clean_evolution('  ""  ')[0] == ""
    # no rewrite to tell apart: left as it is, for the copy rule
    assert clean_evolution("#The Given Prompt#:\nfoo bar")[0] == "#The Given Prompt#:\nfoo bar"


def test_copy_verdict_and_stop_word_readers():
    assert copied_phrase("Rewrite the given prompt so it asks for three fruits.", COPY_PHRASES) == "given prompt"
    assert copied_phrase("Use the #Rewritten  Prompt# below.", COPY_PHRASES) == "rewritten prompt"
    assert copied_phrase("Summarize the given text and prompt the reader.", COPY_PHRASES) is None
    # seen from SmolLM2: the label misspelt, its layout copied
    assert copied_phrase("The Prompt Rewriten Prompt#{}, which must be written", COPY_PHRASES) == "Prompt#"
    assert copied_phrase("Write prompt #3 of a series of writing prompts.", COPY_PHRASES) is None
    assert read_verdict("Not Equal") is False and read_verdict(" Equal.") is True
    assert read_verdict("The first prompt is not equal to the second") is False
    assert read_verdict("NOT-EQUAL") is False and read_verdict("They are unequal") is False
    assert read_verdict("The first prompt is more specific") is None and read_verdict("") is None
    assert read_verdict("They are equal in length, not equal in depth") is True  # the first verdict word counts
    assert only_stop_words("It is what it is...") and only_stop_words(" ?! ") and only_stop_words("Don’t!")
    assert not only_stop_words("It is red.") and not only_stop_words("42")


def test_parsing_real_outputs_of_the_bundled_model():
    """Raw SmolLM2 answers to our prompts (fixtures/make_evol_outputs.py): never fatal, read as expected."""
    evolutions = FIXTURE["evolutions"]
    assert len(evolutions) == 2 * len(METHODS) and {e["method"] for e in evolutions} == set(METHODS)
    cleaned = [clean_evolution(e["raw"]) for e in evolutions]
    copied = [copied_phrase(text, COPY_PHRASES) for text, _ in cleaned]
    # the weak model echoes the prompt's layout and words in 7 of 12 answers: the copy rule eliminates those
    assert [c is not None for c in copied] == [True, True, False, True, True, False, True, True, False, False,
                                               False, False]
    # a preamble ending with ':' before '#The Given Prompt#' is no instruction: left whole for the copy rule
    assert cleaned[0][0].startswith("Here's a rewritten version of the given prompt")
    assert "#The Given Prompt#" in cleaned[0][0]
    # 'The Ultimate Guide\n#Rewritten Prompt#:\n...': the labelled rewrite is taken
    text, notes = cleaned[8]
    assert text.startswith("Your entertainment is your art.")
    assert "layout label before the instruction (stripped)" in notes
    assert all(text and text == text.strip() for text, _ in cleaned)
    verdicts = [read_verdict(c) for c in FIXTURE["checks"]]
    assert verdicts[1] is False and verdicts.count(None) == len(verdicts) - 1  # the 135M model rarely says it
    assert not any(only_stop_words(a) or ("sorry" in a.lower()) for a in FIXTURE["answers"])


# ---- the elimination rules -------------------------------------------------------------------------


def propose(op, pool, **kwargs):
    proposals = list(op.propose(view(pool, **kwargs)))
    return proposals, {p.parents[0]: p for p in proposals}


def test_each_elimination_rule_rejects_with_its_own_reason():
    pool = [record(i) for i in ("Name a fruit.", "Name a colour.", "Name a city.", "Name a river.", "Name a tree.",
                                "Name a bird.", "Name a metal.", "Name a planet.", "Name a poet.")]
    ids = {instruction_text(r): r["id"] for r in pool}
    llm = ScriptedLLM(
        evolutions={"Name a fruit.": "Rewrite the given prompt to name a red fruit.",  # (d)
                    "Name a colour.": "#Rewritten Prompt#:\nName a colour.",  # repeats its instruction (a)
                    "Name a bird.": "#Rewritten Prompt#:\n\n",  # nothing in it
                    "Name a city.": "Name a city in Peru with more than a million people."},
        verdicts={"Name a city in Peru with more than a million people.": "Equal"},  # (a)
        answers={"Name a river. Answer in exactly three steps.": "Sorry, I cannot do that.",  # (b)
                 "Name a tree. Answer in exactly three steps.": "The... is it?!",  # (c)
                 "Name a metal. Answer in exactly three steps.": LONG_SORRY,  # sorry but long: kept
                 "Name a planet. Answer in exactly three steps.": "   "})
    op = operator(llm)
    _, by_parent = propose(op, pool)
    reason = {text: getattr(by_parent[i], "reason", None) for text, i in ids.items()}
    assert reason["Name a fruit."] == "copied from the evolving prompt: 'given prompt' in the instruction"
    assert reason["Name a colour."] == "no information gain: the evolution repeats its instruction"
    assert reason["Name a city."] == "no information gain: judged Equal to its instruction"
    assert reason["Name a river."] == "hard to answer: the answer says 'sorry' in 5 words (< 80)"
    assert reason["Name a tree."] == "answer is only punctuation and stop words"
    assert reason["Name a bird."].startswith("unparsable: no instruction in the")
    assert reason["Name a planet."] == "empty answer"
    assert isinstance(by_parent[ids["Name a metal."]], Candidate)
    assert isinstance(by_parent[ids["Name a poet."]], Candidate)
    assert op.counters["unparsable evolutions (empty after cleaning)"] == 1 and op.counters["empty answers"] == 1
    # rejects keep the evolution as a record (no answer when they failed before answering), the raw text
    copied = by_parent[ids["Name a fruit."]]
    assert copied.record["messages"] == [{"role": "user", "content": "Rewrite the given prompt to name a red fruit."}]
    assert copied.raw == "Rewrite the given prompt to name a red fruit."
    sorry = by_parent[ids["Name a river."]].record["messages"]
    assert sorry[1] == {"role": "assistant", "content": "Sorry, I cannot do that."}
    # nothing failed before the check was asked about it, and no eliminated instruction was answered
    asked = [p for p in llm.prompts if p.startswith("Here are two Instructions")]
    assert len(asked) == 6
    answered = [p for p in llm.prompts if not p.startswith(("Here are two", "I want you"))]
    assert "Name a city in Peru with more than a million people." not in answered and len(answered) == 5


def test_unparsable_information_gain_checks_are_counted_and_kept_or_rejected_as_configured():
    pool = [record("Name a fruit."), record("Name a city.")]
    verdicts = {"Name a fruit. Answer in exactly three steps.": "The first prompt is more specific"}
    kept = operator(ScriptedLLM(verdicts=verdicts))
    proposals, _ = propose(kept, pool)
    assert all(isinstance(p, Candidate) for p in proposals) and len(proposals) == 2
    assert kept.counters["unparsable information-gain checks"] == 1
    strict = operator(ScriptedLLM(verdicts=verdicts), unparsable_check="reject")
    _, by_parent = propose(strict, pool)
    assert by_parent[pool[0]["id"]].reason == "unparsable information-gain check: 'The first prompt is more specific'"
    assert isinstance(by_parent[pool[1]["id"]], Candidate)
    unchecked = ScriptedLLM(verdicts={k: "Equal" for k in ("Name a fruit. Answer in exactly three steps.",)})
    proposals, _ = propose(operator(unchecked, check_gain=False), pool)
    assert all(isinstance(p, Candidate) for p in proposals)
    assert not any(p.startswith("Here are two Instructions") for p in unchecked.prompts)


def test_prompts_and_decoding_follow_the_reference():
    llm = ScriptedLLM()
    op = operator(llm, methods=["deepen"], max_tokens=64)
    propose(op, [record("How do I make apple juice?")])
    evolve, check, answer = llm.prompts
    assert evolve.startswith("I want you to act as a Prompt Rewriter.")
    assert "If #The Given Prompt# contains inquiries about certain issues" in evolve
    assert evolve.endswith("#The Given Prompt#:\nHow do I make apple juice?\n#Rewritten Prompt#:\n")
    assert check.endswith("The Second Prompt: How do I make apple juice? Answer in exactly three steps.\n"
                          "Your Judgement (Just answer: Equal or Not Equal. No need to explain the reason.):\n")
    assert answer == "How do I make apple juice? Answer in exactly three steps."
    sampled, greedy, answering = llm.params
    assert (sampled.temperature, sampled.top_p, sampled.max_tokens) == (1.0, 0.95, 64)
    assert greedy.temperature == 0.0 and answering.max_tokens == 1024 and answering.temperature == 1.0
    breadth = ScriptedLLM()
    propose(operator(breadth, methods=["breadth"]), [record("Name a fruit.")])
    assert breadth.prompts[0].startswith("I want you to act as a Prompt Creator.")
    assert breadth.prompts[0].endswith("#Given Prompt#:\nName a fruit.\n#Created Prompt#:\n")
    complicate = ScriptedLLM()
    propose(operator(complicate, methods=["complicate_input"], input_formats=["JSON data"]), [record("Name a fruit.")])
    assert "You must add JSON data as input data" in complicate.prompts[0]
    assert complicate.prompts[0].count("#The Given Prompt#:\n") == 3  # two in-context examples, then the task


# ---- the pool: chains, retries, seeded choice, lineage ---------------------------------------------


def test_failed_evolutions_are_retried_and_survivors_evolve_next_round():
    pool = [record("Name a fruit."), record("Name a city.")]
    llm = ScriptedLLM(evolutions={"Name a fruit.": "Repeat the given prompt."})
    op = operator(llm)
    first = list(op.propose(view(pool, round_=0)))
    failed = next(p for p in first if isinstance(p, Rejected))
    survivor = accept(op, next(p for p in first if isinstance(p, Candidate)))
    assert failed.parents == [pool[0]["id"]] and survivor["lineage"][-1]["parents"] == [pool[1]["id"]]
    assert survivor["lineage"][-1]["depth"] == 1 and survivor["lineage"][-1]["evolution"] in METHODS
    # round 1: the failed instruction again, and the survivor in place of the instruction it came from
    assert [instruction_text(r) for r in op.heads(view(pool, [survivor], round_=1))] == \
        ["Name a fruit.", "Name a city. Answer in exactly three steps."]
    llm.prompts.clear()
    llm.evolutions = {}
    second = list(op.propose(view(pool, [survivor], round_=1)))
    evolved = {p.record["messages"][0]["content"]: p for p in second}
    deeper = evolved["Name a city. Answer in exactly three steps. Answer in exactly three steps."]
    assert deeper.parents == [survivor["id"]] and deeper.details["depth"] == 2
    assert deeper.record["meta"]["evol_instruct"]["root"] == pool[1]["id"]
    assert evolved["Name a fruit. Answer in exactly three steps."].parents == [pool[0]["id"]]
    assert not any("#The Given Prompt#:\nName a city.\n" in p for p in llm.prompts)  # the parent is not evolved again


def test_method_choice_is_uniform_seeded_and_reproducible():
    pool = [record(f"Name {n} fruits that grow in the tropics.") for n in range(60)]
    methods = [operator(None).method_for(r, 0)[0] for r in pool]
    again = [operator(None).method_for(r, 0)[0] for r in pool]
    other_seed = [operator(None, seed=1).method_for(r, 0)[0] for r in pool]
    next_round = [operator(None).method_for(r, 1)[0] for r in pool]
    assert methods == again and methods != other_seed and methods != next_round
    counts = Counter(methods)
    assert set(counts) == set(METHODS) and max(counts.values()) <= 20  # 10 expected each
    only = [operator(None, methods=["breadth", "deepen"]).method_for(r, 0)[0] for r in pool]
    assert set(only) == {"breadth", "deepen"}
    # the same seed and round send the same prompts
    first, second = ScriptedLLM(), ScriptedLLM()
    propose(operator(first, seed=5), pool[:8])
    propose(operator(second, seed=5), pool[:8])
    assert first.prompts == second.prompts and len(first.prompts) == 24


def test_lineage_meta_and_records_of_accepted_evolutions():
    pool = [record("Name a fruit."), record("Name a fruit.", "Another answer."),
            make_record([{"role": "user", "content": "Name a city."}])]  # prompt-only records evolve too
    op = operator(ScriptedLLM(), methods=["concretize"])
    proposals, by_parent = propose(op, pool)
    assert len(proposals) == 2 and pool[1]["id"] not in by_parent  # one chain per instruction text
    made = by_parent[pool[0]["id"]]
    assert made.details == {"method": "evol_instruct", "evolution": "concretize", "depth": 1}
    assert made.record["messages"] == [
        {"role": "user", "content": "Name a fruit. Answer in exactly three steps."},
        {"role": "assistant", "content": "A helpful answer to: Name a fruit. Answer in exactly three steps."}]
    assert made.record["meta"] == {"evol_instruct": {"evolution": "concretize", "depth": 1, "root": pool[0]["id"]}}
    stamped = accept(op, made, round_=0)
    entry = stamped["lineage"][-1]
    assert entry["op"] == "synth.evol_instruct" and entry["models"] == {"model": "default"} and entry["round"] == 0
    assert entry["parents"] == [pool[0]["id"]] and entry["evolution"] == "concretize"


def test_per_round_evolves_the_deepest_chains_first_and_verify_rejects_repeated_instructions():
    pool = [record(f"Name a fruit number {n}.") for n in range(5)]
    op = operator(ScriptedLLM(), per_round=2)
    proposals = list(op.propose(view(pool)))
    assert len(proposals) == 2
    survivor = accept(op, proposals[0])
    picked = op.pick(op.heads(view(pool, [survivor], round_=1)), view(pool, [survivor], round_=1))
    assert picked[0]["id"] == survivor["id"] and len(picked) == 2
    fresh = [record("Name a fruit number 1."), record(" name a NEW fruit."), record("Name a new fruit.")]
    assert op.verify(fresh, view(pool, [survivor])) == [
        "duplicate instruction: already in the pool, accepted or proposed this round", None,
        "duplicate instruction: already in the pool, accepted or proposed this round"]


def test_config_rejects_unknown_methods():
    with pytest.raises(ValueError):
        EvolInstruct.Config(methods=["widen"])
    with pytest.raises(ValueError):
        EvolInstruct.Config(methods=[])


# ---- end to end with the bundled model -------------------------------------------------------------


@pytest.mark.model
def test_evol_instruct_runs_end_to_end_with_the_bundled_model(tmp_path):
    rows = [{"messages": [{"role": "user", "content": "What is a scary Halloween costume idea?"},
                          {"role": "assistant", "content": "A ghost made from an old white sheet."}]},
            {"messages": [{"role": "user", "content": "Suggest some names for a friendly group in telegram."},
                          {"role": "assistant", "content": "Chat Buddies, The Friendly Bunch."}]}]
    steps = [{"op": "synth.evol_instruct", "target": 1, "max_rounds": 2, "per_round": 2,
              "methods": ["concretize", "breadth"], "max_tokens": 20, "answer_max_tokens": 12, "check_max_tokens": 3}]
    executor, manifest, output, rejects = run_steps(tmp_path, steps, rows)
    assert manifest["status"] == "finished"
    final = {r["id"]: r for batch in iter_checkpoint(Path(manifest["steps"][-1]["checkpoint"])) for r in batch}
    made = [final[r["id"]] for r in output if final[r["id"]].get("lineage")]
    assert len(made) == 1 and len(output) == len(rows) + 1  # the inputs pass on, plus the target
    inputs = {r["id"] for r in final.values() if not r.get("lineage")}
    for evolved in made:
        [entry] = evolved["lineage"]
        assert entry["op"] == "synth.evol_instruct" and entry["method"] == "evol_instruct"
        assert entry["evolution"] in ("concretize", "breadth") and entry["depth"] == 1 and entry["round"] in (0, 1)
        assert entry["parents"][0] in inputs and entry["models"] == {"model": "default"}
        assert [m["role"] for m in evolved["messages"]] == ["user", "assistant"]
        assert all(m["content"].strip() for m in evolved["messages"])
        assert copied_phrase(evolved["messages"][0]["content"], COPY_PHRASES) is None
        assert evolved["meta"]["evol_instruct"]["root"] == entry["parents"][0]
    assert rejects and all(r["reason"] for r in rejects)  # two evolutions for a target of one: one is rejected
    step = manifest["steps"][1]
    assert step["generated"] == step["out"] - len(rows) + step["rejected"]
