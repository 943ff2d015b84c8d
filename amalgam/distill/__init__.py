"""Distillation: the plan (teachers, label spaces, data), the objective, teacher targets and their cache."""
