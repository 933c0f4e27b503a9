"""The ``scsc`` command line (Typer). Commands live in small modules registered on one app."""

from __future__ import annotations

import warnings

from . import ablate, annotate, data, run  # noqa: F401  (registers the commands)
from .app import app


def main() -> None:
    """Console-script entry point."""
    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    app()


__all__ = ["app", "main"]
