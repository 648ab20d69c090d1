"""Summaries computed from results.h5 alone (no model, no GPU): per-folder verdicts (groups.py) and
their storage in the file (groups_h5.py)."""
