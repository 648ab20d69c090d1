"""The typer command-line interface; commands are thin and call the library."""
