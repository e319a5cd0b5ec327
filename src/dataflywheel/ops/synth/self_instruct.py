"""Self-Instruct (Wang et al., 2023): new tasks bootstrapped from seed tasks, kept only when novel.

Each round: prompts of 8 in-context instructions (6 human seeds + 2 machine-generated once there are some)
ask for more as a numbered list; the list is parsed; the paper's rule filters drop instructions naming
images/files/..., too short (<= 3 words) or too long (> 150), starting with punctuation, a non-ASCII
character or "Write a program"; an instruction whose ROUGE-L F with any pool or accepted instruction is above
0.7 is dropped. The model then says whether each survivor is a classification task, and writes an
instance: output first (class label, then an input) for classification, input first otherwise.
"""

from __future__ import annotations

import json
import random
import re
import string
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from pydantic import Field

from dataflywheel.algorithms.rouge import RougePool
from dataflywheel.models.llm import GenerationParams
from dataflywheel.ops.base import Candidate, PoolGeneratorConfig, PoolView, Rejected, SourceGenerator
from dataflywheel.ops.isolate import each_request_alone, request_failed
from dataflywheel.ops.registry import register
from dataflywheel.ops.synth.parsing import parse_fields, parse_list
from dataflywheel.prompts import render_file
from dataflywheel.records import instruction_text, make_record, response_text

PROMPTS = Path(__file__).with_name("prompts")
KEYWORDS = ("image", "images", "graph", "graphs", "picture", "pictures", "file", "files", "map", "maps", "draw",
            "plot", "go to", "video", "audio", "music", "flowchart", "diagram")


@dataclass
class Task:
    """An instruction of the pool: a seed or an accepted record, with one instance when known."""

    id: str
    instruction: str
    input: str = ""
    output: str = ""
    is_classification: bool | None = None


def shipped_seeds() -> list[Task]:
    """The 175 human-written Self-Instruct seed tasks (Apache-2.0, see dataflywheel/data/NOTICE.md)."""
    text = resources.files("dataflywheel").joinpath("data/self_instruct_seed_tasks.jsonl").read_text("utf-8")
    tasks = []
    for line in text.splitlines():
        row = json.loads(line)
        instance = row["instances"][0]
        record = to_record(row["instruction"], instance["input"], instance["output"], row["is_classification"])
        tasks.append(Task(record["id"], row["instruction"], instance["input"], instance["output"],
                          row["is_classification"]))
    return tasks


def to_record(instruction: str, input_: str, output: str, is_classification: bool | None) -> dict:
    """The training record of a task: instruction and input as the user turn (as the alpaca reader joins them)."""
    user = f"{instruction}\n\n{input_}" if input_ else instruction
    meta = {"alpaca": {"instruction": instruction, "input": input_, "response_key": "output"},
            "is_classification": is_classification}
    return make_record([{"role": "user", "content": user}, {"role": "assistant", "content": output}], meta=meta)


def task_of(record: dict) -> Task:
    """A pool or accepted record as a task (the instruction/input split kept by the alpaca reader when known)."""
    meta = record.get("meta") or {}
    alpaca = meta.get("alpaca") or {}
    flag = meta.get("is_classification")
    return Task(record["id"], alpaca.get("instruction") or instruction_text(record), alpaca.get("input") or "",
                response_text(record), flag if isinstance(flag, bool) else None)


def rule_violation(instruction: str, config: SelfInstructConfig) -> str | None:
    """The paper's filters on a new instruction; None when it passes."""
    words = len(instruction.split())
    if words < config.min_words or words > config.max_words:
        return f"length: {words} words (keep {config.min_words}-{config.max_words})"
    for word in config.keywords:
        if re.search(rf"\b{re.escape(word)}\b", instruction, re.IGNORECASE):
            return f"keyword: names {word!r}, which a text model cannot handle"
    if instruction[0] in string.punctuation:
        return "starts with punctuation"
    if not instruction[0].isascii():
        return "starts with a non-ASCII character"
    if any(instruction.startswith(start) for start in config.banned_starts):
        return "starts with a banned phrase ('Write a program' is ambiguous about running it)"
    return None


class SelfInstructConfig(PoolGeneratorConfig):
    model: str = "default"
    """Model role that writes instructions, classifies them and writes instances."""
    prompts_per_round: int = Field(default=4, ge=1)
    human_examples: int = Field(default=6, ge=1)
    """In-context seed instructions per prompt."""
    machine_examples: int = Field(default=2, ge=0)
    """In-context accepted instructions per prompt, once there are some (the rest are seeds)."""
    max_rouge_l: float = Field(default=0.7, ge=0.0, le=1.0)
    """Reject an instruction whose ROUGE-L F with any pool or accepted instruction is above this."""
    min_words: int = Field(default=4, ge=1)
    max_words: int = Field(default=150, ge=1)
    keywords: list[str] = Field(default_factory=lambda: list(KEYWORDS))
    """Reject instructions naming any of these (whole words, any case)."""
    banned_starts: list[str] = Field(default_factory=lambda: ["Write a program"])
    classify: bool = True
    """Ask whether each new instruction is a classification task (output-first instances); false: input-first."""
    classify_examples: int = Field(default=8, ge=0)
    """Seed tasks (half classification) shown when asking whether a task is classification."""
    instance_examples: int = Field(default=2, ge=0)
    """Seed tasks of the same kind shown when asking for an instance."""
    temperature: float = Field(default=0.7, ge=0.0)
    top_p: float = Field(default=0.5, gt=0.0, le=1.0)
    """Sampling of the instruction lists (the paper: 0.7 / 0.5); classification and instances are greedy."""
    max_tokens: int = Field(default=256, ge=1)
    """Tokens per instruction list."""
    instance_max_tokens: int = Field(default=256, ge=1)


@register
class SelfInstruct(SourceGenerator):
    """Self-Instruct: new instruction tasks bootstrapped from seed tasks, ROUGE-L-novel against the pool."""

    name = "synth.self_instruct"
    Config = SelfInstructConfig

    # ---- the pool -------------------------------------------------------------------------------

    def _seeds(self, view: PoolView) -> list[Task]:
        """The input records, or the shipped 175 seeds when the step has no input."""
        if "_seed_tasks" not in vars(self):
            tasks = [task_of(r) for batch in view.scan() for r in batch]
            self._seed_tasks = tasks or shipped_seeds()
        return self._seed_tasks

    def _novelty_pool(self, view: PoolView) -> RougePool:
        """ROUGE-L pool of every seed and accepted instruction (accepted ones added as rounds go)."""
        if "_rouge" not in vars(self):
            self._rouge = RougePool([t.instruction for t in self._seeds(view)])
            self._in_pool: set[str] = set()
        for record in view.accepted:
            if record["id"] not in self._in_pool:
                self._rouge.add(task_of(record).instruction)
                self._in_pool.add(record["id"])
        return self._rouge

    def novelty_reason(self, instruction: str, pools: list[RougePool]) -> str | None:
        """Why ``instruction`` is not novel against ``pools`` (None when it is)."""
        for pool in pools:
            score, index = pool.max(instruction)
            if score > self.config.max_rouge_l:
                return f"too similar: ROUGE-L {score:.3f} > {self.config.max_rouge_l} with {pool.texts[index]!r}"
        return None

    # ---- propose -------------------------------------------------------------------------------

    def propose(self, view: PoolView):
        cfg = self.config
        llm = self.context.models.llm(cfg.model)
        seeds = self._seeds(view)
        machine = [task_of(r) for r in view.accepted]
        rng = random.Random(f"self_instruct:{self.context.seed}:{view.round}")
        prompts, contexts = [], []
        for _ in range(cfg.prompts_per_round):
            shown = rng.sample(machine, min(cfg.machine_examples, len(machine)))
            shown += rng.sample(seeds, min(cfg.human_examples + cfg.machine_examples - len(shown), len(seeds)))
            rng.shuffle(shown)
            contexts.append(shown)
            prompts.append(render_file(PROMPTS / "self_instruct_tasks.txt",
                                       tasks=[re.sub(r"\s+", " ", t.instruction).strip().rstrip(":") for t in shown]))
        params = GenerationParams(max_tokens=cfg.max_tokens, temperature=cfg.temperature, top_p=cfg.top_p,
                                  seed=self.context.seed * 1000 + view.round, stop=("\n\n\n",))
        novel: list[tuple[str, list[Task]]] = []
        round_pool = RougePool()
        pools = [self._novelty_pool(view), round_pool]
        for listed, shown in zip(each_request_alone(lambda asks: llm.complete(asks, params), prompts), contexts):
            parents = [t.id for t in shown]
            if isinstance(listed, Exception):
                yield request_failed(listed, parents)
                continue
            [answer] = listed
            parsed = parse_list(answer, leading_item=True)
            if not parsed.items:
                self.counters["unparsable instruction lists"] += 1
                yield Rejected("unparsable: no instruction in the model's list", raw=answer, parents=parents)
                continue
            if parsed.junk:
                self.counters["lines outside the instruction list (ignored)"] += len(parsed.junk)
            for instruction in parsed.items:
                instruction = instruction[0].upper() + instruction[1:]
                reason = rule_violation(instruction, cfg) or self.novelty_reason(instruction, pools)
                if reason:
                    yield Rejected(reason, raw=instruction, parents=parents)
                    continue
                round_pool.add(instruction)
                novel.append((instruction, shown))
        yield from self._instances(llm, novel, rng)

    def _instances(self, llm, novel: list[tuple[str, list[Task]]], rng: random.Random):
        """Classify each novel instruction, then write one instance for it (output-first for classification)."""
        cfg = self.config
        seeds = self._seed_tasks
        flags = self._classify(llm, [i for i, _ in novel], rng) if cfg.classify else [False] * len(novel)
        prompts = []
        for (instruction, _), flag in zip(novel, flags):
            kind = [t for t in seeds if t.is_classification == flag and t.output] or seeds
            examples = rng.sample(kind, min(cfg.instance_examples, len(kind)))
            template = "self_instruct_output_first.txt" if flag else "self_instruct_input_first.txt"
            prompts.append(render_file(PROMPTS / template, examples=examples, instruction=instruction))
        params = GenerationParams(max_tokens=cfg.instance_max_tokens, stop=("\nTask:", "\n\n\n"))
        answers = each_request_alone(lambda asks: llm.complete(asks, params), prompts) if prompts else []
        for (instruction, shown), flag, written in zip(novel, flags, answers):
            parents = [t.id for t in shown]
            if isinstance(written, Exception):
                yield request_failed(written, parents, raw=instruction)
                continue
            [answer] = written
            fields = parse_fields(answer, first="label" if flag else None).items
            block = fields[0] if fields else {}
            output = block.get("label" if flag else "output", "")
            if not output:
                self.counters["unparsable instances"] += 1
                yield Rejected(f"unparsable instance: no {'class label' if flag else 'output'} in the answer",
                               raw=answer, parents=parents)
                continue
            record = to_record(instruction, block.get("input", ""), output, flag)
            details = {"method": "self_instruct", "is_classification": flag,
                       "instance": "output_first" if flag else "input_first"}
            yield Candidate({k: record[k] for k in ("messages", "meta")}, parents=parents, details=details)

    def _classify(self, llm, instructions: list[str], rng: random.Random) -> list[bool]:
        """Whether each instruction is a classification task (the model's Yes/No; unreadable counts as No)."""
        if not instructions:
            return []
        half = self.config.classify_examples // 2
        examples = []
        for flag, count in ((True, half), (False, self.config.classify_examples - half)):
            kind = [t for t in self._seed_tasks if t.is_classification is flag]
            examples += rng.sample(kind, min(count, len(kind)))
        rng.shuffle(examples)
        prompts = [render_file(PROMPTS / "self_instruct_is_classification.txt", examples=examples, instruction=i)
                   for i in instructions]
        flags = []
        short = GenerationParams(max_tokens=3)
        for answer in each_request_alone(lambda asks: llm.complete(asks, short), prompts):
            if isinstance(answer, Exception):
                self.counters["classification requests that failed (taken as No)"] += 1
                flags.append(False)
                continue
            word = answer[0].strip().lower()
            if not word.startswith(("yes", "no")):
                self.counters["unreadable classification answers (taken as No)"] += 1
            flags.append(word.startswith("yes"))
        return flags

    # ---- verify --------------------------------------------------------------------------------

    def verify(self, candidates: list[dict], view: PoolView) -> list[str | None]:
        """ROUGE-L novelty against every seed, every accepted instruction and the earlier candidates of this
        round."""
        pools = [self._novelty_pool(view), RougePool()]
        reasons = []
        for record in candidates:
            instruction = task_of(record).instruction
            reason = self.novelty_reason(instruction, pools)
            if reason is None:
                pools[1].add(instruction)
            reasons.append(reason)
        return reasons
