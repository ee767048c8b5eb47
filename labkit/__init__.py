"""labkit: the plumbing behind the Contoso Chat workshop notebooks.

Imports are lazy so that small entry points (the local services, the CLI's help) start fast.
Introduced in notebooks/00_setup.ipynb.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "setup": ("labkit.doctor", "setup"),
    "get_settings": ("labkit.config", "get_settings"),
    "repo_path": ("labkit.config", "repo_path"),
    "ConfigError": ("labkit.config", "ConfigError"),
    "evaluate": ("labkit.evaluation.runner", "evaluate"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    if name in {"config", "models", "services", "doctor", "cli", "workshop", "prompts", "costs", "bulk",
                "playground", "schema", "store", "search", "flow", "tracing", "chatui", "evaluation",
                "diagrams", "progress", "requestlog"}:
        return importlib.import_module(f"labkit.{name}")
    raise AttributeError(f"module 'labkit' has no attribute {name!r}")
