"""The command line of an installed rnncells: train a built-in config or a config file.

    python -m rnncells.training --config=adding:smoke --workdir=runs/smoke
    rnncells-train --config=copy --workdir=runs/copy --config.model.cell=gru
    python -m rnncells.training --config=my_config.py --workdir=runs/mine
    python -m rnncells.training --config=adding --show_config

``--config`` takes a built-in config by name (``adding``, ``copy``, ``digits``, each
with ``:smoke`` for a run of seconds) or a config file's path (a Python file with
``get_config(arg=None)``), and ``--config.KEY=VALUE`` overrides any key. The run resumes
from its checkpoints in ``--workdir`` when that holds one. What a user can fix prints as
one ``error:`` line and a ``hint:`` (``user_errors``), as in the repository's
``experiments/`` command lines, which use the same flag handling and add sweeps, reports
and multi-process starts.
"""

from __future__ import annotations

import contextlib
import difflib
import os
import re
import shlex
import sys
import warnings
from collections.abc import Iterator

from absl import app, flags, logging
from ml_collections import ConfigDict, config_flags

from rnncells.training import configs as builtin_configs
from rnncells.training.configs.common import describe
from rnncells.training.errors import ConfigError, RunError, RunInterrupted, RunWarning

__all__ = [
    "config_path",
    "format_summary",
    "main",
    "one_line",
    "parse_flags",
    "run_main",
    "user_errors",
]


def one_line(text: object) -> str:
    """``text`` with every run of whitespace (newlines included) made one space."""
    return " ".join(str(text).split())


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Runs the block as a command: a `RunError` becomes one ``error:`` line (and a
    ``hint:`` line) on stderr and ``sys.exit(error.exit_code)``, with no traceback; a
    `RunWarning` prints as one ``warning:`` line. Other exceptions (bugs) pass through.

    A run stopped by SIGINT or SIGTERM (`RunInterrupted`) ends the process at once
    (``os._exit``) after its lines: the compiled call it left may still be running, and
    the interpreter's exit would wait for it."""
    previous = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, RunWarning):
            print(f"warning: {one_line(message)}", file=sys.stderr, flush=True)
        else:
            previous(message, category, filename, lineno, file, line)

    warnings.showwarning = show
    try:
        yield
    except RunError as error:
        print(f"error: {one_line(error)}", file=sys.stderr)
        if error.hint:
            print(f"hint: {one_line(error.hint)}", file=sys.stderr)
        if isinstance(error, RunInterrupted):
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(error.exit_code)
        sys.exit(error.exit_code)
    finally:
        warnings.showwarning = previous


_TYPE_WORDS = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


def _config_error(message: str, hint: str) -> None:
    """Stops with one ``error:`` line and a ``hint:`` line, exit status 2."""
    with user_errors():
        raise ConfigError(message, hint=hint)


def _override_paths(argv) -> list[tuple[str, str]]:
    """The ``--config.KEY=VALUE`` overrides in ``argv`` as (KEY, the argument)."""
    out = []
    for arg in argv[1:]:
        if arg == "--":
            break
        match = re.match(r"^--?(?:no)?config\.([^=\s]+)", arg)
        if match:
            out.append((match.group(1), arg))
    return out


def _unknown_override(argv) -> None:
    """Stops with one line naming the ``--config.*`` override whose key the config lacks,
    its full path and the closest known keys; returns if it cannot tell which."""
    try:
        config = flags.FLAGS["config"].value
        if config is None:  # the file is loaded, but the failed parse did not keep it
            path = next((a.split("=", 1)[1] for a in argv[1:] if a.startswith("--config=")), None)
            if path is None and "--config" in argv:
                path = argv[argv.index("--config") + 1]
            if path is None:
                return
            config = flags.FLAGS["config"].parser.parse(path)
    except Exception:  # noqa: BLE001 - the file itself is broken: absl's message says so
        return
    for key, arg in _override_paths(argv):
        node, parts = config, key.split(".")
        for depth, part in enumerate(parts):
            if isinstance(node, ConfigDict | dict) and part in node:
                node = node[part]
                continue
            prefix = ".".join(["config", *parts[:depth]])
            known = list(node.keys()) if isinstance(node, ConfigDict | dict) else []
            close = difflib.get_close_matches(part, known, n=3)
            if close:
                hint = "did you mean " + " or ".join(f"{prefix}.{c}" for c in close) + "?"
            elif known:
                hint = f"the keys of {prefix} are: {', '.join(sorted(known))}"
            else:
                hint = f"{prefix} is a value, not a group of keys"
            _config_error(
                f"{arg}: config.{key} is not a key of the config ({prefix} has no key {part!r})",
                hint + " (--show_config lists every key)",
            )


def _bad_override_value(error: Exception) -> None:
    """Stops with one line naming the ``--config.*`` key whose value has the wrong type,
    the type it must have and the value; returns for any other flag error."""
    match = re.match(r"^flag --(config\.[^=]+)=(.*?): (.*)$", str(error), re.S)
    if not match:
        return
    name, value, why = match.groups()
    try:
        default = flags.FLAGS[name].default
        if default is None:
            default = flags.FLAGS[name].value
    except (KeyError, AttributeError):
        default = None
    expected = _TYPE_WORDS.get(type(default), type(default).__name__)
    if default is None:
        expected = "a value of the key's type"
    del why  # absl's words ("invalid literal for int() with base 10") say it less plainly
    _config_error(
        f"{name} must be {expected} ({type(default).__name__}), got {value!r} "
        f"(in --{name}={value})",
        f"give --{name} {expected}, as in --{name}={default}"
        if default is not None
        else f"--show_config shows {name}'s value",
    )


def parse_flags(argv):
    """absl's flag parsing, with one ``error:`` line (exit status 2) for a ``--config.*``
    override that names a key the config lacks (its full path, and the close known keys)
    or gives a value of the wrong type (the key, the type it must have, the value).

    (ml_collections reports an unknown override key as an AttributeError traceback, and
    absl a bad value as a ``FATAL Flags parsing error``.)
    """
    try:
        return flags.FLAGS(argv)
    except AttributeError as error:
        _unknown_override(argv)
        hint = str(error).strip("'").replace("\\'", "'").replace("\\n", " ")
        _config_error(
            f"a --config.* override names a key the config does not have: {hint}",
            "--show_config lists every key",
        )
    except flags.Error as error:
        if isinstance(error, flags.IllegalFlagValueError):
            _bad_override_value(error)
        # Any other bad flag (unknown, a missing --config): absl's message, on one line.
        print(f"error: {one_line(error)}", file=sys.stderr)
        print("hint: --helpshort or --helpfull lists the flags", file=sys.stderr)
        sys.exit(2)


def format_summary(summary: dict, workdir: str) -> str:
    """A run's summary as a person reads it: what ran, held-out figures, where the files are."""
    kwargs = ", ".join(f"{k}={v}" for k, v in sorted(summary.get("task_kwargs", {}).items()))
    seeds = summary["num_seeds"]
    lines = [
        f"{summary['task']} ({kwargs}), {summary['cell']}, init {summary['init']}: "
        f"{summary['steps_run']} of {summary['num_steps']} steps, {seeds} seed"
        + ("s" if seeds != 1 else "")
        + (", stopped early: solved" if summary.get("stopped_early") else "")
    ]
    for name, stats in summary["eval"].items():
        per_seed = ", ".join(f"{v:.4g}" for v in stats["per_seed"])
        lines.append(f"  held-out {name}: {stats['mean']:.4g} ± {stats['std']:.2g} ({per_seed})")
    lines.append(f"  baseline loss: {summary['baseline_loss']:.4g}")
    lines.append(f"  solved by every seed: {'yes' if summary['solved'] else 'no'}")
    lines.append(f"  files: {workdir} (report.md, metrics.jsonl, eval.jsonl, summary.json)")
    return "\n".join(lines)


def config_path(value: str) -> str:
    """``--config``'s value as the file ``config_flags`` loads: a built-in config's name
    (``adding`` or ``adding:smoke``) becomes its module's path; a path stays as it is.

    Raises:
      ConfigError: ``value`` is neither a built-in name nor the path of a file.
    """
    name, sep, arg = value.partition(":")
    if name in builtin_configs.NAMES:
        folder = os.path.dirname(os.path.abspath(builtin_configs.__file__))
        return os.path.join(folder, f"{name}.py") + sep + arg
    if not os.path.isfile(name):
        close = difflib.get_close_matches(name, builtin_configs.NAMES, n=1)
        raise ConfigError(
            f"--config must be a built-in config ({', '.join(builtin_configs.NAMES)}, each "
            f"also as NAME:smoke) or a config file's path, got {value!r}",
            hint=f"did you mean --config={close[0]}{sep}{arg}?"
            if close
            else "a config file is a Python file with get_config(arg=None)",
        )
    return value


def _resolve_config_flag(argv: list[str]) -> list[str]:
    """``argv`` with a built-in config's name in ``--config`` made its file's path."""
    out = list(argv)
    for i, arg in enumerate(out):
        if arg.startswith("--config="):
            out[i] = "--config=" + config_path(arg.split("=", 1)[1])
        elif arg == "--config" and i + 1 < len(out):
            out[i + 1] = config_path(out[i + 1])
    return out


def main(argv: list[str]) -> None:
    """Trains the config the flags give in ``--workdir``, then prints its summary."""
    from rnncells.training import train

    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    config = flags.FLAGS["config"].value
    if flags.FLAGS["show_config"].value:
        print(describe(config))
        return
    workdir = flags.FLAGS["workdir"].value
    if workdir is None:
        raise app.UsageError("--workdir is required (the folder for the run's files)")
    logging.set_verbosity(logging.WARNING)  # Orbax logs every save at INFO
    command = " ".join(
        shlex.quote(a) for a in [sys.executable, "-m", "rnncells.training", *sys.argv[1:]]
    )
    with user_errors():
        summary = train(config, workdir, command=command)
    print(format_summary(summary, workdir).replace("report.md, ", ""))


def run_main() -> None:
    """``python -m rnncells.training`` and the ``rnncells-train`` console script."""
    config_flags.DEFINE_config_file(
        "config",
        None,
        "a built-in config (adding, copy, digits; NAME:smoke for a run of seconds) or a "
        "config file's path",
        lock_config=True,
    )
    flags.DEFINE_string("workdir", None, "folder for metrics and checkpoints (resumed if any)")
    flags.DEFINE_bool(
        "show_config", False, "print every config key with its value and meaning, and exit"
    )
    flags.mark_flags_as_required(["config"])
    with user_errors():
        sys.argv = _resolve_config_flag(sys.argv)
    app.run(main, flags_parser=parse_flags)
