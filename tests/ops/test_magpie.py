"""synth.magpie: the pre-query template cut from chat templates, the paper's filters, the propose flow with a
scripted model, and real runs with the bundled SmolLM2 (transformers here; the llama.cpp server in
test_magpie_runs_against_the_llama_cpp_server)."""

import hashlib
from types import SimpleNamespace

import numpy as np
import pytest
from jinja2.sandbox import ImmutableSandboxedEnvironment

from dataflywheel.models import ModelAuthError, ModelRequestError
from dataflywheel.ops import Candidate, OpContext, PoolView, Rejected, get_operator
from dataflywheel.ops.synth.magpie import (
    SENTINEL,
    RepeatIndex,
    instruction_problem,
    normalise,
    parse_input_quality,
    pre_query_template,
    strip_bos,
    turn_end_markers,
)
from dataflywheel.pipeline import LocalExecutor, parse_recipe
from dataflywheel.pipeline.run_dir import iter_rejects
from dataflywheel.records import make_record
from tests.conftest import read_jsonl
from tests.llama_server import llama_server_fixture

Magpie = get_operator("synth.magpie")

# SmolLM2-135M-Instruct's chat template (ChatML with a default system turn), as its tokenizer_config.json has it
CHATML = ("{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
          "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
          "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
          "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
# Meta-Llama-3-8B-Instruct's chat template
LLAMA3 = ("{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
          "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + "
          "'<|eot_id|>' %}"
          "{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}"
          "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}")


def formatter(template: str, bos_token: str = ""):
    """``format_chat`` of a tokenizer with this chat template (rendered as transformers renders it)."""
    compiled = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True).from_string(template)
    return lambda conversation, add_generation_prompt=True: compiled.render(
        messages=conversation, add_generation_prompt=add_generation_prompt, bos_token=bos_token)


def test_pre_query_template_of_chatml_and_llama3():
    chatml, llama3 = formatter(CHATML), formatter(LLAMA3, "<|begin_of_text|>")
    assert pre_query_template(chatml) == ("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by "
                                          "Hugging Face<|im_end|>\n<|im_start|>user\n")
    assert pre_query_template(chatml, system="Ask about maths.") == \
        "<|im_start|>system\nAsk about maths.<|im_end|>\n<|im_start|>user\n"
    # the paper's configs/model_configs.json: Llama-3's pre_query_template and its mt_append_template after a turn
    assert pre_query_template(llama3) == "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n"
    history = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]
    assert pre_query_template(llama3, history) == (
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant"
        "<|end_header_id|>\n\nHello!<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n")
    assert turn_end_markers(chatml) == ["<|im_end|>", "<|im_start|>"]
    assert turn_end_markers(llama3) == ["<|eot_id|>", "<|start_header_id|>", "<|end_header_id|>"]
    assert strip_bos(pre_query_template(llama3), "<|begin_of_text|>") == "<|start_header_id|>user<|end_header_id|>\n\n"
    assert strip_bos("<|im_start|>user\n", None) == "<|im_start|>user\n"
    with pytest.raises(ValueError, match="pre-query template"):  # a template that drops user turns
        pre_query_template(lambda conversation, add_generation_prompt: "<s>")
    assert SENTINEL.strip() == SENTINEL and " " not in SENTINEL  # survives templates that trim the content


def test_rule_filters_and_quality_parsing():
    assert instruction_problem("", 3) == "empty instruction"
    assert instruction_problem("Hello there", 3) == "too short: 2 words (min 3)"
    assert instruction_problem("Translate the following sentence into French:", 3) == \
        "ends with ':' (an unfinished instruction)"
    assert instruction_problem("How do plants make food?", 3) is None
    assert normalise("  How do I bake Bread?!") == normalise("how do i bake bread") == "how do i bake bread"
    assert parse_input_quality('{"explanation": "Clear.", "input_quality": "good"}') == "good"
    assert parse_input_quality('```json\n{\n "explanation": "vague",\n "input_quality": "[very poor]",\n}\n```') == \
        "very poor"
    assert parse_input_quality('The query is clear.\n"input_quality": "excellent"\n}') == "excellent"
    assert parse_input_quality("Average.") == "average"
    assert parse_input_quality("I think it is a nice question.") is None
    assert parse_input_quality("") is None


def test_repeat_index_distance_is_the_papers_squared_l2():
    index = RepeatIndex()
    a = np.array([1.0, 0.0], dtype=np.float32)
    b = np.array([np.cos(0.1), np.sin(0.1)], dtype=np.float32)
    assert index.nearest(a) == (float("inf"), None)
    index.add(["first"], a[None, :])
    distance, text = index.nearest(b)
    assert text == "first" and distance == pytest.approx(float(np.sum((a - b) ** 2)), abs=1e-6)
    assert index.same("FIRST!") == "first" and index.same("second") is None


# ---- the propose flow with a scripted model -------------------------------------------------------


class BagOfWords:
    """A stand-in embedder: hashed word counts, unit length (sentences that share most words are close)."""

    name = "bow"

    def embed(self, texts):
        out = np.zeros((len(texts), 512), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in normalise(text).split():
                out[row, int(hashlib.md5(word.encode()).hexdigest(), 16) % 512] += 1
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)


LONG = ("Explain in simple terms how a bicycle gear system works and why riders shift to lower gears when they climb "
        "steep hills on long rides")


class Tokenizer:
    """The special tokens of a tokenizer, and whether encoding adds BOS by itself."""

    def __init__(self, bos_token, eos_token, adds_bos):
        self.bos_token, self.eos_token, self.bos_token_id, self.adds = bos_token, eos_token, 1, adds_bos

    def __call__(self, text, add_special_tokens=True):
        return {"input_ids": [1] * (self.adds and add_special_tokens) + [50] * len(text.split())}  # a token a word


SMOLLM2_TOKENIZER = Tokenizer("<|im_start|>", "<|im_end|>", adds_bos=False)  # BOS is <|im_start|>, never added


class ScriptedLLM:
    """A ChatML model: query samples for the pre-query template, follow-ups after an exchange, answers, tags."""

    name = "scripted"

    def __init__(self, samples, followups=(), tags=None, template=CHATML, tokenizer=SMOLLM2_TOKENIZER):
        self.samples, self.followups, self.tags = list(samples), list(followups), tags or {}
        self.completions, self.chats = [], []
        self.format_chat = formatter(template, tokenizer.bos_token)
        self.tokenizer = tokenizer

    def complete(self, prompts, params):
        self.completions += [(p, params) for p in prompts]
        if "<|im_start|>assistant" in prompts[0]:  # a follow-up after an exchange
            return [[self.followups.pop(0)] for _ in prompts]
        return [self.samples[:params.n] for _ in prompts]

    def chat(self, conversations, params):
        self.chats += [(c, params) for c in conversations]
        answers = []
        for conversation in conversations:
            text = conversation[-1]["content"]
            if text.startswith("# Instruction\n\nYou need to rate"):
                query = text.split("## User Query\n```\n")[1].split("\n```")[0]
                answers.append([self.tags.get(query, "no idea")])
            else:
                answers.append(["" if "silent" in text else f" Answer to: {text}\n"])
        return answers


class Models:
    def __init__(self, llm, spec_backend="transformers"):
        self.model, self.backend, self.vectors = llm, spec_backend, BagOfWords()

    def llm(self, role):
        return self.model

    def embedder(self, role):
        return self.vectors

    def spec(self, role):
        return SimpleNamespace(backend=self.backend)


def chat_record(user, answer="An answer."):
    return make_record([{"role": "user", "content": user}, {"role": "assistant", "content": answer}])


def view(pool=(), accepted=(), round_=0, target=10):
    return PoolView(scan=lambda: iter([list(pool)]), accepted=list(accepted), round=round_, target=target)


def test_propose_samples_the_pre_query_template_and_rejects_each_filter_with_its_reason():
    samples = ["  What are three tips for growing tomatoes on a balcony?\n", "", "Hi there", "Write a haiku about:",
               "What is the capital of Portugal?",  # the pool has it (case and punctuation aside)
               LONG + ".", LONG + " today.",  # the second is a near-repeat of the first (same round)
               "Describe how tides form, in plain words.", "Please stay silent when answering this."]
    llm = ScriptedLLM(samples)
    op = Magpie(Magpie.Config(samples=len(samples), max_tokens=40), OpContext(seed=2, models=Models(llm)))
    pool = [chat_record("what is the capital of portugal")]
    accepted = [chat_record("Describe how tides form in plain words")]
    proposals = list(op.propose(view(pool, accepted, round_=1)))
    rejected = {p.raw.strip(): p.reason for p in proposals if isinstance(p, Rejected)}
    made = [p for p in proposals if isinstance(p, Candidate)]
    assert rejected[""] == "empty instruction" and rejected["Hi there"].startswith("too short")
    assert rejected["Write a haiku about:"].startswith("ends with ':'")
    assert rejected["What is the capital of Portugal?"] == "repeat: same text as 'what is the capital of portugal'"
    assert rejected["Describe how tides form, in plain words."].startswith("repeat: same text as")  # an accepted one
    near = rejected[LONG + " today."]
    assert near.startswith("repeat: min neighbour distance") and repr(LONG + ".") in near
    assert float(near.split("distance ")[1].split()[0]) < 0.05
    assert "empty response" in rejected.values()  # the model answered the 'silent' query with nothing
    assert len(set(rejected.values())) == len(rejected)  # every reason says which filter
    assert op.counters["empty instruction samples"] == 1 and op.counters["empty responses"] == 1
    [tomatoes, bicycle] = made
    assert tomatoes.record["messages"] == [
        {"role": "user", "content": "What are three tips for growing tomatoes on a balcony?"},
        {"role": "assistant", "content": "Answer to: What are three tips for growing tomatoes on a balcony?"}]
    assert bicycle.record["messages"][0]["content"] == LONG + "."
    prefix = "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n" \
             "<|im_start|>user\n"
    assert tomatoes.details["method"] == "magpie" and tomatoes.details["template"] == prefix
    assert tomatoes.details["turns"] == 1 and tomatoes.details["min_neighbor_distance"] > 0.05
    [(prompt, params)] = llm.completions
    assert prompt == prefix  # transformers encodes the text as it is: BOS text kept
    assert (params.n, params.temperature, params.top_p, params.max_tokens) == (len(samples), 1.0, 1.0, 40)
    assert params.stop == ("<|im_end|>", "<|im_start|>", "assistant", "\n") and params.seed == 2_010_000
    # responses: the query alone through the chat template, greedy
    assert all(c == [{"role": "user", "content": c[0]["content"]}] and p.temperature == 0 for c, p in llm.chats)


def test_system_prompt_presets_multi_turn_tagging_and_bos_for_servers():
    samples = ["How do vaccines train the immune system?", "Tell me something about stars please.",
               "What makes a good password for email?"]
    followups = ["Can you give an example of one vaccine?", "ok"]
    tags = {samples[0]: '{"explanation": "clear", "input_quality": "good"}', samples[1]: '{"input_quality": "poor"}',
            samples[2]: "I cannot rate this."}
    llm = ScriptedLLM(samples, followups, tags)
    config = Magpie.Config(samples=3, turns=2, tag_quality=True, system_prompt="math")
    op = Magpie(config, OpContext(seed=0, models=Models(llm, spec_backend="openai")))
    proposals = list(op.propose(view()))
    rejected = {p.raw: p.reason for p in proposals if isinstance(p, Rejected)}
    assert rejected[samples[1]] == "input quality 'poor' not in good, excellent"
    assert rejected[samples[2]] == "input quality: the tagger's answer holds no rating"
    assert op.counters["unparsable quality tags"] == 1
    [made] = [p for p in proposals if isinstance(p, Candidate)]
    assert [m["role"] for m in made.record["messages"]] == ["user", "assistant", "user", "assistant"]
    assert made.record["messages"][2]["content"] == followups[0]
    assert made.details["turns"] == 2 and made.details["input_quality"] == "good"
    first, second = (p for p, _ in llm.completions)
    # the math preset steers the first query; SmolLM2's BOS (<|im_start|>) is never added by a tokenizer: kept
    assert first.startswith("<|im_start|>system\nYou are an AI assistant designed to provide helpful, step-by-step "
                            "guidance on solving math problems.") and first.endswith("<|im_end|>\n<|im_start|>user\n")
    # the follow-up: the paper's multi-round system prompt, the exchange, then the user header
    assert "multi-round conversation" in second and second.endswith(
        "<|im_start|>user\nHow do vaccines train the immune system?<|im_end|>\n<|im_start|>assistant\n"
        "Answer to: How do vaccines train the immune system?<|im_end|>\n<|im_start|>user\n")
    assert made.details["template"] == first


@pytest.mark.parametrize("backend, stripped", [("transformers", False), ("openai", True), ("vllm", True)])
def test_bos_text_is_dropped_only_where_the_server_adds_bos_itself(backend, stripped):
    llama3 = Tokenizer("<|begin_of_text|>", "<|eot_id|>", adds_bos=True)
    llm = ScriptedLLM(["How far away is the Moon from the Earth?"], template=LLAMA3, tokenizer=llama3)
    op = Magpie(Magpie.Config(samples=1), OpContext(seed=0, models=Models(llm, spec_backend=backend)))
    [made] = list(op.propose(view()))
    [(prompt, params)] = llm.completions
    header = "<|start_header_id|>user<|end_header_id|>\n\n"
    assert prompt == (header if stripped else "<|begin_of_text|>" + header) == made.details["template"]
    assert params.stop == ("<|eot_id|>", "<|start_header_id|>", "<|end_header_id|>", "assistant", "\n")
    forced = Magpie(Magpie.Config(samples=1, strip_bos=False), OpContext(models=Models(ScriptedLLM(
        ["How far away is the Moon from the Earth?"], template=LLAMA3, tokenizer=llama3), spec_backend=backend)))
    assert next(iter(forced.propose(view()))).details["template"].startswith("<|begin_of_text|>")


def test_a_query_that_used_every_token_is_rejected_as_truncated():
    llm = ScriptedLLM(["Tell me about the history of the", "Name two primary colours."])
    op = Magpie(Magpie.Config(samples=2, max_tokens=8), OpContext(seed=0, models=Models(llm)))
    truncated, made = list(op.propose(view()))
    assert truncated.reason == "truncated: the query reached max_tokens (8) before its turn ended"
    assert made.record["messages"][0]["content"] == "Name two primary colours."
    op = Magpie(Magpie.Config(samples=2, max_tokens=8, reject_truncated=False),
                OpContext(seed=0, models=Models(ScriptedLLM(["Tell me about the history of the"]))))
    assert isinstance(next(iter(op.propose(view()))), Candidate)


def test_follow_up_failures_are_rejected_with_the_turn():
    llm = ScriptedLLM(["Name a few rivers in Europe, please."], followups=["Why:"])
    op = Magpie(Magpie.Config(samples=1, turns=2), OpContext(seed=0, models=Models(llm)))
    [rejected] = list(op.propose(view()))
    assert isinstance(rejected, Rejected) and rejected.reason == "turn 2: too short: 1 word (min 3)"
    assert rejected.record["messages"][0]["content"] == "Name a few rivers in Europe, please."


class FailingFor(ScriptedLLM):
    """A server on which some requests fail for good (as a too-long prompt would): the tagging of one query,
    the answer to another, the follow-up after a third; ``error`` is what they raise."""

    def __init__(self, *args, tag_fails, answer_fails, followup_fails, error=ModelRequestError, **kwargs):
        super().__init__(*args, **kwargs)
        self.fails, self.error = (tag_fails, answer_fails, followup_fails), error

    def complete(self, prompts, params):
        if any("<|im_start|>assistant" in p and self.fails[2] in p for p in prompts):
            raise self.error("HTTP 400: the prompt is too long")
        return super().complete(prompts, params)

    def chat(self, conversations, params):
        for conversation in conversations:
            text = conversation[-1]["content"]
            if (text.startswith("# Instruction") and self.fails[0] in text) or text == self.fails[1]:
                raise self.error("HTTP 400: the prompt is too long")
        return super().chat(conversations, params)


def test_a_request_failing_for_good_loses_only_its_own_query():
    queries = ["How do vaccines train the immune system?", "What makes a good password for email?",
               "Which planets in our solar system have rings?", "Why do leaves change colour in autumn?"]
    llm = FailingFor(queries, followups=["Why are some leaves red rather than yellow?"],
                     tags={q: '{"input_quality": "good"}' for q in queries},
                     tag_fails=queries[0], answer_fails=queries[1], followup_fails=queries[2])
    op = Magpie(Magpie.Config(samples=4, turns=2, tag_quality=True), OpContext(seed=0, models=Models(llm)))
    proposals = list(op.propose(view()))
    tagging, answering, following = [p for p in proposals if isinstance(p, Rejected)]
    failed = "model request failed: ModelRequestError: HTTP 400: the prompt is too long"
    assert (tagging.reason, answering.reason, following.reason) == (failed, f"turn 1: {failed}", f"turn 2: {failed}")
    assert tagging.raw == queries[0]
    assert answering.record == {"messages": [{"role": "user", "content": queries[1]}]}
    assert following.record == {"messages": [{"role": "user", "content": queries[2]},
                                             {"role": "assistant", "content": f"Answer to: {queries[2]}"}]}
    [made] = [p for p in proposals if isinstance(p, Candidate)]
    assert [m["content"] for m in made.record["messages"][::2]] == [queries[3], "Why are some leaves red rather than "
                                                                               "yellow?"]
    # an error no query is at fault for (a refused key) stops the step
    auth = FailingFor(queries, tags={q: '{"input_quality": "good"}' for q in queries}, tag_fails=queries[0],
                      answer_fails="-", followup_fails="-", error=ModelAuthError)
    with pytest.raises(ModelAuthError):
        list(Magpie(Magpie.Config(samples=4, tag_quality=True), OpContext(models=Models(auth))).propose(view()))


def test_verify_rejects_repeats_of_the_pool_accepted_and_earlier_candidates():
    op = Magpie(Magpie.Config(), OpContext(seed=0, models=Models(ScriptedLLM([]))))
    pool = [chat_record("What is the boiling point of water at sea level?")]
    accepted = [chat_record(LONG)]
    fresh = [chat_record("what is the boiling point of water at sea level"), chat_record(LONG + " today"),
             chat_record("Suggest a name for a small bakery."), chat_record("Suggest a name for a small bakery!"),
             chat_record("List three uses of copper in homes.")]
    reasons = op.verify(fresh, view(pool, accepted))
    assert reasons[0].startswith("repeat: same text as 'What is the boiling")
    assert reasons[1].startswith("repeat: min neighbour distance")
    assert reasons[2] is None and reasons[4] is None
    assert reasons[3] == "repeat: same text as 'Suggest a name for a small bakery.'"
    # the embedding check off: exact repeats still go, near ones pass
    op = Magpie(Magpie.Config(repeat_distance=0), OpContext(seed=0, models=Models(ScriptedLLM([]))))
    reasons = op.verify(fresh, view(pool, accepted))
    assert reasons[0].startswith("repeat: same text") and reasons[1] is None


# ---- real runs with the bundled model -------------------------------------------------------------


ONE_THREAD = {"backend": "transformers", "model": "smollm2", "options": {"threads": 1}}
"""The bundled model on one thread: on a shared CPU, two torch threads contend and run several times slower."""
SMOLLM2_PREFIX = ("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
                  "<|im_start|>user\n")


def check_run(executor, manifest, target):
    output = read_jsonl(executor.run_dir.root / "output.jsonl")
    rejects = list(iter_rejects(executor.run_dir))
    assert manifest["status"] == "finished" and 1 <= len(output) <= target
    for record in output:
        [entry] = record["lineage"]
        assert entry["op"] == "synth.magpie" and entry["method"] == "magpie" and entry["turns"] == 1
        assert entry["template"].endswith("<|im_start|>user\n") and "round" in entry and entry["parents"] == []
        assert [m["role"] for m in record["messages"]] == ["user", "assistant"]
        assert all(m["content"].strip() and "<|im_" not in m["content"] for m in record["messages"])
        assert "\n" not in record["messages"][0]["content"] and not record["messages"][0]["content"].endswith(":")
    filters = ("empty", "too short", "ends with ':'", "truncated", "repeat", "target of", "near duplicate",
               "exact duplicate")
    assert all(r["reason"].startswith(filters) for r in rejects)
    step = manifest["steps"][1]
    assert step["generated"] == step["out"] + step["rejected"]
    return output, rejects


@pytest.mark.model
def test_magpie_runs_end_to_end_with_the_bundled_model(tmp_path):
    steps = [{"op": "synth.magpie", "target": 2, "max_rounds": 3, "samples": 2, "max_tokens": 32,
              "response_max_tokens": 16}]
    # seed 3: two short queries in the first round on this CPU build (another seed may need more rounds)
    recipe = {"output": {"dir": str(tmp_path / "run")}, "steps": steps, "seed": 3,
              "cache": str(tmp_path / "calls.sqlite"), "models": {"default": ONE_THREAD}}
    executor = LocalExecutor(parse_recipe(recipe), quiet=True)
    manifest = executor.execute(report=False)
    output, _ = check_run(executor, manifest, 2)
    [entry] = output[0]["lineage"]
    assert entry["template"] == SMOLLM2_PREFIX  # read from the real tokenizer's chat template
    assert entry["models"] == {"model": "default", "embedder": "embedder", "tagger_model": "default"}


server_url = llama_server_fixture()  # llama-cpp-python serving the bundled GGUF, for this module


@pytest.mark.server
def test_magpie_runs_against_the_llama_cpp_server(server_url, tmp_path):
    """Queries by raw completion at the OpenAI-compatible /v1/completions, the template from the tokenizer."""
    from dataflywheel.models.bundled import smollm2_dir

    options = {"base_url": server_url, "chat_template_from": str(smollm2_dir()), "concurrency": 2}
    steps = [{"op": "synth.magpie", "target": 2, "max_rounds": 2, "samples": 3, "max_tokens": 48,
              "response_max_tokens": 24}]
    recipe = {"output": {"dir": str(tmp_path / "run")}, "steps": steps, "seed": 0, "cache": str(tmp_path / "c.sqlite"),
              "models": {"default": {"backend": "openai", "model": "smollm2", "options": options}}}
    executor = LocalExecutor(parse_recipe(recipe), quiet=True)
    manifest = executor.execute(report=False)
    output, _ = check_run(executor, manifest, 2)
    assert output[0]["lineage"][0]["template"] == SMOLLM2_PREFIX  # SmolLM2's tokenizer adds no BOS: kept
