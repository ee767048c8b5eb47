"""Fine-tuning helpers: offline checks of a chat fine-tuning file before you upload it.

Introduced in notebooks/05_fine_tune.ipynb. The names below are loaded from
`labkit.finetune.validate` on first use, so that `python -m labkit.finetune.validate` runs without
the module being imported twice.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from labkit.finetune.validate import (
        Issue,
        TrainingCost,
        ValidationReport,
        estimate_training_cost,
        validate_file,
        validate_lines,
    )

__all__ = ["Issue", "TrainingCost", "ValidationReport", "estimate_training_cost", "validate_file",
           "validate_lines"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module("labkit.finetune.validate"), name)
    raise AttributeError(f"module 'labkit.finetune' has no attribute {name!r}")
