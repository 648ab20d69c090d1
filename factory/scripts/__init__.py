"""Command-line drivers of the factory: run from the repository root as ``python -m factory.scripts.<name>``."""
