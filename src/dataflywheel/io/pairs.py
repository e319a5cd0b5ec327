"""Preference pairs stored as two whole conversations: Anthropic HH-RLHF transcripts
("\\n\\nHuman: ...\\n\\nAssistant: ...") and TRL's implicit-prompt format (chosen and rejected as turn lists).

The turns both conversations share are the prompt; their differing final assistant turns are the answers.
"""

from __future__ import annotations

import re

from dataflywheel.records import RecordError

_SPEAKERS = {"Human": "user", "Assistant": "assistant"}
_NAMES = {"user": "Human", "assistant": "Assistant"}
_MARKER = re.compile(r"\n\n(Human|Assistant): ")


def is_transcript(value: object) -> bool:
    return isinstance(value, str) and value.startswith("\n\nHuman: ")


def parse_transcript(text: str, field: str) -> list[dict]:
    """The turns of an HH-RLHF transcript; exact: ``format_transcript`` gives the same text back."""
    parts = _MARKER.split(text)
    if parts[0]:
        raise RecordError(f"field {field!r} is not an HH-RLHF transcript: it must start with '\\n\\nHuman: '")
    return [{"role": _SPEAKERS[who], "content": body} for who, body in zip(parts[1::2], parts[2::2])]


def format_transcript(turns: list[dict], field: str) -> str:
    for i, turn in enumerate(turns):
        if turn["role"] not in _NAMES or turn.get("tool_calls"):
            raise RecordError(f"format 'hh_rlhf' holds Human and Assistant turns only; {field} turn {i} is a "
                              f"{turn['role']} turn{' with tool calls' if turn.get('tool_calls') else ''}")
    return "".join(f"\n\n{_NAMES[t['role']]}: {t['content']}" for t in turns)


def split_pair(chosen: list[dict], rejected: list[dict]) -> tuple[list[dict], dict, dict]:
    """(shared prompt turns, chosen answer, rejected answer) of two conversations that differ only in their
    final assistant turn; RecordError saying where they part otherwise."""
    for name, turns in (("chosen", chosen), ("rejected", rejected)):
        if len(turns) < 2 or turns[-1]["role"] != "assistant":
            raise RecordError(f"the {name} conversation must end with an assistant answer to a prompt: it has "
                              f"{len(turns)} turn{'s' if len(turns) != 1 else ''}"
                              f"{', the last by the ' + turns[-1]['role'] if turns else ''}")
    if chosen[:-1] != rejected[:-1]:
        first = next((i for i, (a, b) in enumerate(zip(chosen[:-1], rejected[:-1])) if a != b),
                     min(len(chosen), len(rejected)) - 1)
        raise RecordError(f"chosen and rejected differ before their final answer, so they share no prompt: from "
                          f"turn {first} (chosen has {len(chosen)} turns, rejected {len(rejected)})")
    return chosen[:-1], chosen[-1], rejected[-1]
