"""Utilities shared by two or more recipes: data readers, labels, class imbalance, metrics, LoRA, reporting.

Nothing here knows which recipe calls it; a recipe never imports another recipe.
"""

from shared.errors import DataError

__all__ = ["DataError"]
