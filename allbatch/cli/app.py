"""``allbatch``: the typer app. Commands live in their own modules; this file wires them and maps errors.

Exit codes: 0 all images ok; 1 user error (one line, no traceback); 3 some images failed (their rows
hold status and error); 130 interrupted. Bugs keep their traceback.
"""

from __future__ import annotations

import logging
import sys

import typer
from rich.console import Console
from rich.logging import RichHandler

from allbatch.errors import AllbatchError

EXIT_OK = 0
EXIT_USER_ERROR = 1
EXIT_SOME_FAILED = 3
EXIT_INTERRUPTED = 130

app = typer.Typer(
    name="allbatch",
    help="Batch B-ALL subtype classification of peripheral blood smear images (HSV segmentation + two-channel DenseNet201).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err_console = Console(stderr=True)


def _click_exception_type() -> type[Exception]:
    """Usage errors' base class: typer >= 0.2x vendors click as ``typer._click``, older typer uses click."""
    try:
        from typer._click.exceptions import ClickException
    except ImportError:
        from click.exceptions import ClickException  # type: ignore[no-redef,import-not-found,unused-ignore]
    return ClickException


def configure_logging(verbose: bool = False) -> None:
    """A RichHandler on the ``allbatch`` logger only (never the root logger)."""
    logger = logging.getLogger("allbatch")
    if not logger.handlers:
        logger.addHandler(RichHandler(console=err_console, show_path=False, show_time=False))
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
    from allbatch.cli.export_cmd import export_command
    from allbatch.cli.info_cmd import info_command
    from allbatch.cli.report_cmd import report_command
    from allbatch.cli.run_cmd import run_command

    app.command("run")(run_command)
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
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False)
        sys.exit(EXIT_USER_ERROR)
    except (typer.Abort, KeyboardInterrupt):
        err_console.print("interrupted: committed rows are kept; re-run with --resume to continue")
        sys.exit(EXIT_INTERRUPTED)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except usage_error as exc:
        err_console.print(f"[bold red]error:[/] {exc.format_message()}", highlight=False)  # type: ignore[attr-defined]
        sys.exit(EXIT_USER_ERROR)
    sys.exit(code if isinstance(code, int) else EXIT_OK)


if __name__ == "__main__":
    main()
