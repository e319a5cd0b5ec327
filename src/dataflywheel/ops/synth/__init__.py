"""Synthesis operators: generators that propose new records, verify them and keep only what passes."""
