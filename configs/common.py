"""The defaults every config starts from, and what each key means
(``rnncells.training.configs.common``)."""

from rnncells.training.configs.common import DESCRIPTIONS, base_config, describe

__all__ = ["DESCRIPTIONS", "base_config", "describe"]
