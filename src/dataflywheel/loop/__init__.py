"""Closing the loop: drivers that alternate data runs and training (Self-Rewarding iterations)."""
