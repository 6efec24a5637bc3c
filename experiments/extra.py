"""The check every command line of ``experiments/`` makes first: that the experiments
extra is installed, so that a missing module is one ``error:`` line, not a traceback."""

from __future__ import annotations

import importlib
import sys

__all__ = ["EXTRA_MODULES", "require_extra"]

# What the command lines import from the experiments extra (train and plot, and flax).
EXTRA_MODULES = ("absl", "ml_collections", "optax", "orbax.checkpoint", "tqdm", "matplotlib")


def require_extra(command: str, modules: tuple[str, ...] = EXTRA_MODULES) -> None:
    """Exits with one ``error:`` line and a ``hint:`` (status 2) when one of ``modules``
    cannot be imported, before a command line's own imports would fail with a traceback.
    ``command`` names the command line in the message."""
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as error:
            missing = error.name or module
            print(
                f"error: {command} needs the experiments extra: {missing} cannot be "
                f"imported ({' '.join(str(error).split())})",
                file=sys.stderr,
            )
            print(
                'hint: pip install -e ".[experiments]" in the repository (the command '
                "lines are not part of the installed package)",
                file=sys.stderr,
            )
            raise SystemExit(2) from None
