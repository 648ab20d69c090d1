"""``allbatch eval results.h5``: accuracy, per-class and screening metrics against folder-name labels."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.text import Text

from allbatch.cli.console import make_console, print_warning, printable
from allbatch.cli.output_guard import ForceOption, check_writable_target
from allbatch.core.errors import UserInputError


def default_png_path(results: Path) -> Path:
    """``<results stem>.confusion.png`` beside the results file."""
    return results.with_name(f"{results.stem}.confusion.png")


def eval_command(
    results: Annotated[Path, typer.Argument(help="A results.h5 written by allbatch run.")],
    labels_from_folders: Annotated[
        bool,
        typer.Option(
            "--labels-from-folders/--no-labels-from-folders",
            help="Take each image's true class from the name of its folder (unless --labels is given).",
        ),
    ] = True,
    labels: Annotated[
        Path | None,
        typer.Option(
            "--labels",
            help="CSV of 'path or file name, class' rows (an archive by patient, mixed folders too); classes as folder names accept them.",
        ),
    ] = None,
    include_not_a_smear: Annotated[
        bool,
        typer.Option(
            "--include-not-a-smear", help="Also evaluate images flagged as not a smear (small, blurred, off-colour; left out by default)."
        ),
    ] = False,
    class_map: Annotated[
        list[str] | None,
        typer.Option(
            "--class-map",
            help='FOLDER=Class, or a JSON file {"FOLDER": "Class"}; repeatable; overrides the built-in folder names.',
        ),
    ] = None,
    threshold: Annotated[float, typer.Option(help="Screening threshold on P(ALL) = 1 - P(Benign).")] = 0.5,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the metrics as JSON to PATH ('-' for stdout).")] = None,
    png: Annotated[
        Path | None, typer.Option("--png", help="Confusion-matrix PNG to write (default: <results stem>.confusion.png beside RESULTS).")
    ] = None,
    no_png: Annotated[bool, typer.Option("--no-png", help="Write no PNG.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No tables; only errors (and --json output).")] = False,
    force: ForceOption = False,
) -> None:
    """Compare the predictions in RESULTS with the classes named by the images' folders, or by a --labels file."""
    from allbatch.evaluation import EvalConfig, evaluate_results
    from allbatch.evaluation.report import png_unavailable_reason, render_report, save_confusion_png, to_json
    from allbatch.results.reader import incomplete_run_warning

    if png is not None and no_png:
        raise UserInputError("--png and --no-png exclude each other")
    if json_out is not None and str(json_out) != "-":  # before any work: metrics JSON is never replaced unasked
        check_writable_target(json_out, force=force, example="metrics.json")
    png_path = None if no_png else png or default_png_path(results)
    png_missing = png_unavailable_reason() if png_path is not None else None
    if png_missing and png is not None:  # asked for by name: refuse before any work
        raise UserInputError(f"--png needs matplotlib, which {png_missing.removeprefix('matplotlib ')}")
    warning = incomplete_run_warning(results) if results.is_file() else None  # a missing file: evaluate_results says so
    if warning:
        print_warning(warning)
    config = EvalConfig(
        labels_from_folders=labels_from_folders,
        class_map=tuple(class_map or ()),
        threshold=threshold,
        labels_file=labels,
        include_not_a_smear=include_not_a_smear,
    )
    result = evaluate_results(results, config)
    json_to_stdout = json_out is not None and str(json_out) == "-"
    console = make_console(stderr=json_to_stdout, quiet=quiet)
    console.print(render_report(result))
    if png_path is not None and png_missing is None:
        written = save_confusion_png(result, png_path)
        console.print(Text(f"confusion matrix -> {printable(str(written))}"))
    elif png_path is not None and not quiet:  # the default PNG is optional: say why it is missing, succeed
        print_warning(f"no confusion-matrix PNG: {png_missing}; pass --no-png to skip it")
    if json_out is not None:
        text = json.dumps(to_json(result), indent=2)
        if json_to_stdout:
            typer.echo(text)
        else:
            try:
                json_out.write_text(text + "\n", encoding="utf-8")
            except OSError as exc:
                raise UserInputError(f"cannot write {json_out}: {exc.strerror or exc}") from exc
            console.print(Text(f"metrics -> {printable(str(json_out))}"))
