"""Distillation math: SimCC KD losses, teacher-grid mapping, top-k and basis targets."""
