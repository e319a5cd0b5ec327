"""Pointwise judge rubrics: the template of each, its scale and the parser of the judge's answer.

Alpagasus and DEITA quality reuse the templates of ``score.judge`` (``ops/score/prompts``), Self-Rewarding
the additive 5-point template of ``ops/synth/prompts``; MT-Bench single-answer grading (1-10, "[[rating]]")
and its reference-guided variant are the FastChat llm_judge prompts (single-v1, single-math-v1), here."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from dataflywheel.ops.score import judge as score_judge
from dataflywheel.ops.synth import answer_judge
from dataflywheel.prompts import render_file

PROMPTS = Path(__file__).with_name("prompts")
_NUMBER = r"(\d+(?:\.\d+)?)"


def parse_rating(text: str, low: float = 1, high: float = 10) -> float:
    """An MT-Bench judge's rating: the last ``[[N]]`` on the scale (FastChat's format), else the last ``[N]``,
    else the last 'Rating: N'; NaN when there is none."""
    for pattern in (rf"\[\[\s*{_NUMBER}\s*\]\]", rf"\[\s*{_NUMBER}\s*\]", rf"rating\s*[:=]\s*\**\s*{_NUMBER}"):
        values = [float(v) for v in re.findall(pattern, text, flags=re.IGNORECASE) if low <= float(v) <= high]
        if values:
            return values[-1]
    return float("nan")


@dataclass(frozen=True)
class Rubric:
    template: Path
    low: int
    high: int
    parse: Callable[[str], float]
    """The score in a judge's answer (NaN when there is none)."""
    slots: Callable[[str, str, str | None], dict]
    """Template values from (instruction, response, reference)."""
    needs_reference: bool = False

    def render(self, instruction: str, response: str, reference: str | None = None) -> str:
        return render_file(self.template, **self.slots(instruction, response, reference))


def _plain(instruction: str, response: str, reference: str | None) -> dict:
    return {"instruction": instruction, "response": response}


def _with_reference(instruction: str, response: str, reference: str | None) -> dict:
    return {"instruction": instruction, "response": response, "reference": reference}


def _self_rewarding(instruction: str, response: str, reference: str | None) -> dict:
    return {"question": instruction, "response": response, "score_only": False}


RUBRICS: dict[str, Rubric] = {
    "alpagasus": Rubric(score_judge.PROMPTS / "alpagasus.txt", *score_judge.RUBRICS["alpagasus"],
                        parse=lambda text: score_judge.parse_score(text, *score_judge.RUBRICS["alpagasus"]),
                        slots=_plain),
    "deita_quality": Rubric(score_judge.PROMPTS / "deita_quality.txt", *score_judge.RUBRICS["deita_quality"],
                            parse=lambda text: score_judge.parse_score(text, *score_judge.RUBRICS["deita_quality"]),
                            slots=_plain),
    "self_rewarding": Rubric(answer_judge.PROMPTS / answer_judge.RUBRICS["self_rewarding"][0],
                             *answer_judge.RUBRICS["self_rewarding"][1:3],
                             parse=lambda text: answer_judge.parse_judgement(text, "self_rewarding"),
                             slots=_self_rewarding),
    "mt_bench": Rubric(PROMPTS / "mt_bench.txt", 1, 10, parse=parse_rating, slots=_plain),
    "reference": Rubric(PROMPTS / "reference.txt", 1, 10, parse=parse_rating, slots=_with_reference,
                        needs_reference=True),
}
