"""``python -m rnncells.training --config=adding:smoke --workdir=runs/smoke``: see
``rnncells.training.cli``."""

from rnncells.training.cli import run_main

if __name__ == "__main__":
    run_main()
