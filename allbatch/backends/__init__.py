"""Inference backends: one protocol (``Backend``), one module per runtime, chosen by ``select``."""
