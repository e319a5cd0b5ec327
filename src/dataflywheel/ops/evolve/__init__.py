"""Evolve: LLM-as-a-judge operators (pointwise rubrics, pairwise in both orders)."""
