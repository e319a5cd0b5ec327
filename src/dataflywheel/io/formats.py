"""Row formats: the shapes a dataset row can have, by name (readers in ``readers``, writers in ``writers``).

- ``alpaca``: instruction / input / output (or response), optional system and LLaMA-Factory ``history``
  ([[prompt, response], ...] earlier turns); ``chosen``/``rejected`` strings make a preference pair; no
  output makes a prompt-only record. Also read from prompt/response, question/answer, query/response.
- ``sharegpt``: ``conversations`` of ``{from, value}`` turns (function_call / observation for tools), optional
  system and tools; ``chosen``/``rejected`` turns make a pair (LLaMA-Factory).
- ``messages``: OpenAI chat turns, tool calls included (also read from ``conversation(s)`` with role/content).
- ``trl``: prompt / chosen / rejected strings; ``trl_messages``: the same as chat turns (TRL's conversational
  preference format; without a prompt, the turns chosen and rejected share are the prompt).
- ``hh_rlhf``: Anthropic HH-RLHF, chosen and rejected as whole "\\n\\nHuman: ... \\n\\nAssistant: ..." transcripts.
- ``completion``: prompt / completion; ``kto``: prompt / completion / label (true = a desirable answer).
- ``text``: plain text (read as a single assistant turn).
- ``rejects`` (read only): the rows of a run's ``rejected/*.parquet``.

Fields a format does not use are kept in ``meta`` and written back, so A -> records -> A is lossless.
"""

from __future__ import annotations

FORMATS = ("alpaca", "sharegpt", "messages", "trl", "trl_messages", "hh_rlhf", "completion", "kto", "text")
"""Formats that are read and written."""
READ_FORMATS = FORMATS + ("rejects",)

PAIR_FORMATS = ("trl", "trl_messages", "hh_rlhf")
"""Formats that hold preference pairs only."""
PREFERENCE_CHOICES = ("chosen", "both")
"""How a pair becomes SFT records: keep the chosen answer, or both as two records labelled true and false."""
