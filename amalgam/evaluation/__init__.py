"""Evaluation: per-task scores of student and teachers, the report, figures and export."""
