"""The typer command-line interface: thin commands that build a config and call the library; exit codes in
``exit_codes``; one exception family (``AllbatchError``) caught at this edge."""
