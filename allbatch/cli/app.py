"""``allbatch``: the typer app. Commands live in their own modules; this file wires them and maps errors.

Exit codes (``exit_codes``): 0 every file the run read is ok; 1 user error (one line, no traceback); 3 some
files the run read failed (their rows hold status and error); 130 interrupted by SIGINT (Ctrl-C), 143 stopped
by SIGTERM (committed rows kept, see ``stop_signals``). Bugs keep their traceback.
"""

from __future__ import annotations

import logging
import sys
from typing import Annotated

import typer

from allbatch import __version__
from allbatch.cli.console import log_handler, print_error
from allbatch.cli.exit_codes import EXIT_INTERRUPTED, EXIT_OK, EXIT_USER_ERROR
from allbatch.core.errors import AllbatchError

app = typer.Typer(
    name="allbatch",
    help="Batch B-ALL subtype classification of peripheral blood smear images (HSV segmentation + two-channel DenseNet201).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Plain click help: typer's Rich help panels print a "<bool>" type after every flag, which takes no value.
    rich_markup_mode=None,
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"allbatch {__version__}")
        raise typer.Exit(EXIT_OK)


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", help="Print allbatch's version and exit.", callback=_print_version, is_eager=True)
    ] = False,
) -> None:
    """Batch B-ALL subtype classification of peripheral blood smear images (HSV segmentation + two-channel DenseNet201)."""


def _click_exception_type() -> type[Exception]:
    """Usage errors' base class: typer >= 0.2x vendors click as ``typer._click``, older typer uses click."""
    try:
        from typer._click.exceptions import ClickException
    except ImportError:
        from click.exceptions import ClickException  # type: ignore[no-redef,import-not-found,assignment,unused-ignore]
    return ClickException


def configure_logging(verbose: bool = False) -> None:
    """A handler on the ``allbatch`` logger only (never the root logger): Rich on a terminal, plain lines otherwise."""
    logger = logging.getLogger("allbatch")
    if not logger.handlers:
        logger.addHandler(log_handler())
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)
    logger.propagate = False


_registered = False


def _register() -> None:
    """Import command modules here (not at module top) so each stays importable on its own. Idempotent."""
    global _registered
    if _registered:
        return
    _registered = True
    from allbatch.cli.bench_cmd import bench_command
    from allbatch.cli.engine_cmd import engine_app
    from allbatch.cli.eval_cmd import eval_command
    from allbatch.cli.exit_codes import RUN_EXIT_CODES_HELP
    from allbatch.cli.export_cmd import export_command
    from allbatch.cli.info_cmd import info_command
    from allbatch.cli.merge_cmd import merge_command
    from allbatch.cli.report_cmd import report_command
    from allbatch.cli.run_cmd import run_command

    app.command("run", epilog=RUN_EXIT_CODES_HELP)(run_command)
    app.command("merge")(merge_command)
    app.command("export")(export_command)
    app.command("info")(info_command)
    app.command("bench")(bench_command)
    app.command("eval")(eval_command)
    app.command("report")(report_command)
    app.add_typer(engine_app, name="engine")


def main() -> None:
    """Entry point: run the app, turning AllbatchError and usage errors into one line and exit 1."""
    _register()
    configure_logging()
    usage_error = _click_exception_type()
    try:
        code = app(standalone_mode=False)
    except AllbatchError as exc:
        print_error(str(exc))
        sys.exit(EXIT_USER_ERROR)
    except (typer.Abort, KeyboardInterrupt):
        print_error("committed rows are kept; re-run with --resume to continue", prefix="interrupted")
        sys.exit(EXIT_INTERRUPTED)
    except typer.Exit as exc:
        if exc.exit_code == EXIT_INTERRUPTED and isinstance(exc.__cause__, KeyboardInterrupt):  # typer's own Ctrl-C handling
            print_error("committed rows are kept; re-run with --resume to continue", prefix="interrupted")
        sys.exit(exc.exit_code)
    except usage_error as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":  # `allbatch` alone: the help, not an error
            typer.echo(exc.format_message())  # type: ignore[attr-defined]
            sys.exit(EXIT_OK)
        print_error(exc.format_message())  # type: ignore[attr-defined]
        sys.exit(EXIT_USER_ERROR)
    sys.exit(code if isinstance(code, int) else EXIT_OK)


if __name__ == "__main__":
    main()
