"""The recipe: its schema, loading (`base:`, `--set`) and the checks run before any work."""
