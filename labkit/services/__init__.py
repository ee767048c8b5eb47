"""Local services: starting, reusing and stopping the embedded model server and search service.

Kept import-free so that `python -m labkit.services.search_service` starts fast; the process
manager is loaded on first use. Introduced in notebooks/00_setup.ipynb.
"""

from __future__ import annotations

import importlib
from typing import Any

_API = {
    "ensure_running", "stop", "status", "ServiceError", "ServiceState", "register_model",
    "registered_models", "local_search_keys",
}


def __getattr__(name: str) -> Any:
    if name in _API:
        return getattr(importlib.import_module("labkit.services.manager"), name)
    raise AttributeError(f"module 'labkit.services' has no attribute {name!r}")
