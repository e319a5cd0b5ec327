"""Imports every built-in operator module so that each registers itself."""

from dataflywheel.ops.enhance import normalize  # noqa: F401
from dataflywheel.ops.select import (alpaca_rules, exact_dedup, heuristic_filters, language_filter,  # noqa: F401
                                     budget_selectors, length_filter, less_select, minhash_dedup, score_filters,
                                     semantic_dedup)
from dataflywheel.ops.score import ask_llm, deita, embedding_scores, ifd, judge, perplexity  # noqa: F401
from dataflywheel.ops.synth import (evol_instruct, failure_prompts, grounded_qa, magpie,  # noqa: F401
                                    preference_pairs, self_instruct)
from dataflywheel.ops.enhance import pii  # noqa: F401
from dataflywheel.ops.distill import compress  # noqa: F401
from dataflywheel.ops.distill import coreset, rationale, teacher  # noqa: F401
from dataflywheel.ops.enhance import safety  # noqa: F401
from dataflywheel.ops.enhance import rewrite  # noqa: F401
from dataflywheel.ops.enhance import noise  # noqa: F401
from dataflywheel.ops.enhance import rebalance  # noqa: F401
from dataflywheel.ops.enhance import llm2llm  # noqa: F401
from dataflywheel.ops.evolve import judge as evolve_judge, pairwise  # noqa: F401
from dataflywheel.ops.evolve import self_refine  # noqa: F401
