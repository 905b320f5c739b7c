"""The parts the recipes are made of, organised by domain (the recipes in ``recipes/<task>/train.py`` hold the
procedure). Top-level modules serve every recipe (arguments, errors, loading models, tables and labels, splits,
imbalance, optimisation, LoRA, metrics, prediction, resuming, output folders, reporting); ``shared.ner`` and
``shared.images`` hold what only token tasks or only image tasks use. See the Layout section of the README.

Nothing here knows which recipe calls it or changes the caller's argument objects; a recipe imports only ``shared``.
"""

from shared.core.errors import DataError

__all__ = ["DataError"]
