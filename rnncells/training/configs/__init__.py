"""The built-in training configs, one module per task, each with ``get_config(arg=None)``
(``arg="smoke"``: a run of seconds that checks the pipeline only).

``python -m rnncells.training --config=adding`` (or ``adding:smoke``, ``copy``,
``digits``) trains one; the repository's ``configs/*.py`` are these same configs, as files
for ``python -m experiments.run --config=configs/adding.py``.
"""

NAMES = ("adding", "copy", "digits")
"""The built-in configs, by the name ``--config`` takes."""

__all__ = ["NAMES"]
