"""``python -m allbatch``: the same as the ``allbatch`` command."""

from allbatch.cli.app import main

main()
