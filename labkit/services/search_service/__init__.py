"""A local HTTP service that speaks the Azure AI Search REST API, so the real azure-search-documents
SDK works offline.

Introduced in notebooks/02_index_data.ipynb.

Run it with `python -m labkit.services.search_service --host 127.0.0.1 --port PORT --data-dir DIR`.
It keeps one SQLite file per index under `DIR/indexes/` (definition, documents, an FTS5 table for
BM25 text search and the vectors, which are searched exactly with numpy) and its API keys in
`DIR/keys.json`. This package imports nothing from the rest of labkit.
"""

from __future__ import annotations

import sys
from pathlib import Path

__all__ = ["SearchEngine", "SearchError", "launch_argv"]


def launch_argv(port: int, data_dir: str | Path) -> list[str]:
    """The command that starts the service on 127.0.0.1:`port` (the process manager, tests, benchmarks)."""
    return [sys.executable, "-m", "labkit.services.search_service", "--host", "127.0.0.1",
            "--port", str(port), "--data-dir", str(data_dir)]


def __getattr__(name: str) -> object:  # lazy, so that `python -m` and the CLI stay fast
    if name == "SearchEngine":
        from .engine import SearchEngine

        return SearchEngine
    if name == "SearchError":
        from .errors import SearchError

        return SearchError
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
