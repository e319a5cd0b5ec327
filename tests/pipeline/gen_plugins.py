"""Small generator plugins for the executor tests: one per shape, with failure modes on demand.

The real generators (Self-Instruct, Evol-Instruct, Magpie, ...) come with the synthesize issue; these
exercise the contract every one of them follows: propose -> verify -> accept, lineage, rejects.
"""

from __future__ import annotations

import time

from pydantic import Field

from dataflywheel.models.llm import GenerationParams
from dataflywheel.ops import (Candidate, Generator, GeneratorConfig, NoveltyConfig, OpConfig, PoolGenerator,
                              PoolGeneratorConfig, Rejected, Scorer, SourceGenerator, register)
from dataflywheel.records import instruction_text, response_text


def _pair(question: str, answer: str) -> dict:
    return {"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]}


class FollowUpConfig(GeneratorConfig):
    fail_marker: str = "FAIL_BATCH"
    """A batch holding a record whose instruction contains this raises (a generator error on a batch)."""


@register
class FollowUps(Generator):
    """Per batch: one follow-up question per record; 'INVALID' in an instruction yields a broken record."""

    name = "test.follow_ups"
    Config = FollowUpConfig

    def generate(self, records):
        if any(self.config.fail_marker in instruction_text(r) for r in records):
            raise RuntimeError("the teacher could not answer this batch")
        for record in records:
            question = instruction_text(record)
            if "INVALID" in question:
                yield {"messages": "not a list of turns"}
                continue
            if "UNPARSABLE" in question:
                yield Rejected("could not parse the teacher's answer", raw="<<garbled>>", parents=[record["id"]])
                continue
            yield Candidate(_pair(f"Follow-up: why? ({question[:40]})", f"Because {response_text(record)[:40]}"),
                            parents=[record["id"]], details={"method": "follow_up"})


class ScreenedFollowUpConfig(FollowUpConfig, NoveltyConfig):
    pass


@register
class ScreenedFollowUps(FollowUps):
    """FollowUps whose outputs are screened against what the step generated before (a NoveltyConfig)."""

    name = "test.screened_follow_ups"
    Config = ScreenedFollowUpConfig


class CounterConfig(PoolGeneratorConfig):
    per_round: int = Field(default=4, ge=1)
    echo_pool: bool = True
    """Also propose a copy of the first pool record each round (an exact duplicate to be rejected)."""
    near_copy: str = ""
    """Also propose, in round 0, the first pool record's instruction with its last word replaced by this."""
    fail_rounds: list[int] = Field(default_factory=list)
    """Rounds whose proposal raises (every time it is asked)."""


@register
class NumberedTasks(PoolGenerator):
    """Whole pool: proposes numbered tasks each round; verify rejects multiples of 3 and near-copies of accepted."""

    name = "test.numbered_tasks"
    Config = CounterConfig

    def propose(self, view):
        if view.round in self.config.fail_rounds:
            raise RuntimeError(f"round {view.round} broke")
        pool = [r for batch in view.scan() for r in batch]
        base = len(view.accepted) + 10 * view.round
        if self.config.echo_pool and pool:
            first = pool[0]
            yield Candidate({"messages": first["messages"]}, parents=[first["id"]])
        if self.config.near_copy and pool and view.round == 0:
            words = instruction_text(pool[0]).split()
            yield Candidate(_pair(" ".join(words[:-1] + [self.config.near_copy]), "A different answer."),
                            parents=[pool[0]["id"]], details={"near_copy": True})
        for k in range(self.config.per_round):
            n = base + k
            yield Candidate(_pair(f"Task {n}: count to {n}.", " ".join(str(i) for i in range(1, n % 7 + 2))),
                            parents=[pool[n % len(pool)]["id"]] if pool else [], details={"n": n})

    def verify(self, candidates, view):
        seen = {instruction_text(r) for r in view.accepted}
        reasons = []
        for record in candidates:
            words = instruction_text(record).split()
            number = int(words[1].rstrip(":")) if words[0] == "Task" else 1
            if number % 3 == 0:
                reasons.append(f"task {number} is a multiple of 3")
            elif instruction_text(record) in seen:
                reasons.append("same instruction as an accepted task")
            else:
                reasons.append(None)
            seen.add(instruction_text(record))
        return reasons


class FactsConfig(PoolGeneratorConfig):
    model: str = "default"
    per_round: int = Field(default=2, ge=1)
    max_tokens: int = Field(default=12, ge=1)
    seconds_per_round: float = 0.0


@register
class NumberFacts(SourceGenerator):
    """Source: asks the model for a fact about a new number each time; needs no input."""

    name = "test.number_facts"
    Config = FactsConfig
    model_role_fields = ("model",)

    def propose(self, view):
        llm = self.context.models.llm(self.config.model)
        start = len(view.accepted) + 100 * view.round
        questions = [f"Say one short fact about the number {start + k}." for k in range(self.config.per_round)]
        answers = llm.chat([[{"role": "user", "content": q}] for q in questions],
                           GenerationParams(max_tokens=self.config.max_tokens))
        time.sleep(self.config.seconds_per_round)
        for question, [answer] in zip(questions, answers):
            if not answer.strip():
                yield Rejected("empty answer", raw=answer)
            else:
                yield _pair(question, answer)


class LengthScoreConfig(OpConfig):
    score_name: str = "chars"


@register
class ResponseChars(Scorer):
    """Scores a record by its response length in characters (a stand-in for any scorer)."""

    name = "test.response_chars"
    Config = LengthScoreConfig

    def score_batch(self, records):
        return [float(len(response_text(r))) for r in records]


from dataflywheel.ops import Mapper  # noqa: E402


@register
class ShoutBatch(Mapper):
    """Upper-cases responses; implements only ``map_batch`` and fails on a batch holding 'BAD'."""

    name = "test.shout_batch"

    def map_batch(self, records):
        if any("BAD" in instruction_text(r) for r in records):
            raise ValueError("cannot shout at BAD records")
        return [{**r, "messages": r["messages"][:-1] + [{**r["messages"][-1],
                                                          "content": r["messages"][-1]["content"].upper()}]}
                for r in records]


class AskConfig(OpConfig):
    model: str = "judge"
    score_name: str = "answer_chars"


@register
class AskModel(Scorer):
    """Asks the model about each instruction and scores the answer's length (a stand-in for any judge)."""

    name = "test.ask_model"
    Config = AskConfig

    def score_batch(self, records):
        llm = self.context.models.llm(self.config.model)
        answers = llm.chat([[{"role": "user", "content": instruction_text(r)}] for r in records],
                           GenerationParams(max_tokens=8))
        return [float(len(a[0])) for a in answers]
