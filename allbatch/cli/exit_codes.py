"""What ``allbatch`` exits with, for scripts: 0 every file this run read is ok (a ``--resume`` with nothing new
too: earlier failures stay in the summary and in results.h5); 1 user error (one line, no traceback); 3 some
files this run read failed (their rows hold status and error); 130 interrupted by SIGINT (Ctrl-C), 143 stopped
by SIGTERM (committed rows kept, see ``stop_signals``)."""

EXIT_OK = 0
EXIT_USER_ERROR = 1
EXIT_SOME_FAILED = 3
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143

RUN_EXIT_CODES_HELP = (
    "\b\nExit codes:\n"
    f"  {EXIT_OK}    every file this run read is ok; also a --resume with nothing new to do\n"
    "       (failures of earlier runs stay listed in the summary and in results.h5)\n"
    f"  {EXIT_USER_ERROR}    user error: one line on stderr, nothing written\n"
    f"  {EXIT_SOME_FAILED}    some files this run read failed; each has a row with its status and error\n"
    f"  {EXIT_INTERRUPTED}  interrupted (Ctrl-C); committed rows are kept, re-run with --resume\n"
    f"  {EXIT_TERMINATED}  stopped by SIGTERM; committed rows are kept, re-run with --resume"
)
"""The exit codes as ``allbatch run --help`` shows them (``\\b``: click keeps the lines as written)."""
