"""Probability mass of answer labels among a model's next-token candidates (judges, Ask-LLM, pairwise).

A label's mass is the sum of exp(logprob) over the candidate tokens that read as that label ('Yes', ' yes'
and 'yes' all read as 'yes'). The total tells whether the model was answering in the expected form at all:
callers trust the probabilities only when it reaches a minimum, and otherwise generate and parse.
"""

from __future__ import annotations

import math
from typing import Callable, Hashable, TypeVar

Label = TypeVar("Label", bound=Hashable)

MIN_MASS = 0.5
"""Default: at least half the next-token probability must fall on valid labels to trust it."""


def label_mass(top: dict[str, float], label_of: Callable[[str], Label | None]) -> dict[Label, float]:
    """Label -> summed probability of the candidate tokens that ``label_of`` maps to it (None: no label)."""
    mass: dict = {}
    for token, logprob in top.items():
        label = label_of(token)
        if label is not None:
            mass[label] = mass.get(label, 0.0) + math.exp(logprob)
    return mass


def trusted(mass: dict, min_mass: float = MIN_MASS) -> bool:
    """Whether the labels hold enough probability for their distribution to mean something."""
    return sum(mass.values()) >= min_mass and sum(mass.values()) > 0
