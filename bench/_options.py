"""What every ``guestpool bench`` command shares: where it writes and where
its figures go."""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console

from guestpool._errors import GuestpoolError
from guestpool._paths import data_dir, writable_dir

#: markup off, as the command line's (``guestpool.cli._output``)
console = Console(stderr=True, markup=False)
out = Console(markup=False)


def results_dir(path: Path | None) -> Path:
    """Where figures go: --results, else ./bench/results in a checkout, else the data folder."""
    if path is None:
        here = Path("bench/results")
        path = here if here.parent.is_dir() else data_dir() / "bench-results"
    try:
        writable_dir(path)
    except OSError as e:
        raise GuestpoolError(f"results folder {path} is not writable: {e.strerror}") from None
    return path


results_option = click.option("--results", type=click.Path(path_type=Path), default=None,
                              help="Folder for JSON results and plots (default: bench/results).")
