"""The Typer application object, shared consoles and the user-error boundary."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape

from .. import __version__
from ..errors import ScscError

app = typer.Typer(
    name="scsc",
    help=(
        "scSiameseClu single-cell clustering: dual augmentation, siamese fusion and optimal-transport "
        "clustering, in linear memory.\n\n"
        "Typical session:\n\n"
        "  scsc simulate --cells 2000 --types 6 demo.h5   # or use your own .h5/.h5ad/10x/csv\n\n"
        "  scsc info demo.h5\n\n"
        "  scsc cluster demo.h5 --out run1                 # pretrains, clusters, writes result.h5ad\n\n"
        "  scsc components                                # what --augment/--encoder/--fusion/--cluster take"
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
    rich_markup_mode="rich",
)

console = Console()
err_console = Console(stderr=True)


def user_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn :class:`ScscError` into a one-line message and exit code 2 (no traceback)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except ScscError as exc:
            # Escape: paths and config keys such as "[loss]" must not be read as rich markup.
            err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
            raise typer.Exit(code=exc.exit_code) from None
        except KeyboardInterrupt:
            err_console.print("[yellow]interrupted[/]; no result was written")
            raise typer.Exit(code=130) from None

    return wrapper


def _version(value: bool) -> None:
    if value:
        console.print(f"scsc {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Show the version and exit."
    ),
) -> None:
    """scsc command-line interface."""


def print_json(data: Any) -> None:
    """Machine-readable output on stdout (no colour, no wrapping)."""
    import json

    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
