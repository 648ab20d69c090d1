"""What ``allbatch`` exits with, for scripts: 0 all images ok; 1 user error (one line, no traceback); 3 some
images failed (their rows hold status and error); 130 interrupted by SIGINT (Ctrl-C), 143 stopped by SIGTERM
(committed rows kept, see ``stop_signals``)."""

EXIT_OK = 0
EXIT_USER_ERROR = 1
EXIT_SOME_FAILED = 3
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143
