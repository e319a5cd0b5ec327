"""Distill: condense knowledge and text (teacher and rationale distillation, prompt compression, coresets)."""
