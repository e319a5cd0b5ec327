"""Where each built-in operator lives: ``get_operator`` imports only the module of the operator it is asked
for (importing all of them cost a third of a second at every start); ``import_all`` is for listings. A test
checks that this table and the registered operators agree."""

import importlib

MODULES = {
    "distill.coreset": "distill.coreset",
    "distill.llmlingua": "distill.compress",
    "distill.rationale": "distill.rationale",
    "distill.selective_context": "distill.compress",
    "distill.teacher": "distill.teacher",
    'enhance.llm2llm': 'enhance.llm2llm',
    "enhance.noise": "enhance.noise",
    "enhance.normalize": "enhance.normalize",
    "enhance.pii": "enhance.pii",
    "enhance.rebalance": "enhance.rebalance",
    "enhance.rewrite": "enhance.rewrite",
    "enhance.safety": "enhance.safety",
    "evolve.judge": "evolve.judge",
    "evolve.pairwise": "evolve.pairwise",
    "evolve.self_refine": "evolve.self_refine",
    "score.ask_llm": "score.ask_llm",
    "score.deita": "score.deita",
    "score.embedding": "score.embedding_scores",
    "score.ifd": "score.ifd",
    "score.judge": "score.judge",
    "score.perplexity": "score.perplexity",
    "select.alpaca_rules": "select.alpaca_rules",
    "select.broken_response_filter": "select.heuristic_filters",
    "select.cluster_balanced": "select.budget_selectors",
    "select.cluster_proportional": "select.budget_selectors",
    "select.deita": "select.budget_selectors",
    "select.density_sample": "select.budget_selectors",
    "select.exact_dedup": "select.exact_dedup",
    "select.facility_location": "select.budget_selectors",
    "select.k_center": "select.budget_selectors",
    "select.language_filter": "select.language_filter",
    "select.length_filter": "select.length_filter",
    "select.less": "select.less_select",
    "select.minhash_dedup": "select.minhash_dedup",
    "select.perplexity_filter": "select.score_filters",
    "select.refusal_filter": "select.heuristic_filters",
    "select.repetition_filter": "select.heuristic_filters",
    "select.score_range": "select.score_filters",
    "select.semantic_dedup": "select.semantic_dedup",
    "select.symbol_ratio_filter": "select.heuristic_filters",
    "select.top_k": "select.budget_selectors",
    "synth.evol_instruct": "synth.evol_instruct",
    "synth.failure_prompts": "synth.failure_prompts",
    "synth.grounded_qa": "synth.grounded_qa",
    "synth.magpie": "synth.magpie",
    "synth.preference_pairs": "synth.preference_pairs",
    "synth.self_instruct": "synth.self_instruct",
}
"""Operator name -> its module under ``dataflywheel.ops``."""


def import_module_of(name: str) -> bool:
    """Import the module of built-in operator ``name``; False when no built-in has that name."""
    module = MODULES.get(name)
    if module is not None:
        importlib.import_module(f"dataflywheel.ops.{module}")
    return module is not None


def import_all() -> None:
    """Import every built-in operator module (each registers its operators)."""
    for module in dict.fromkeys(MODULES.values()):
        importlib.import_module(f"dataflywheel.ops.{module}")
