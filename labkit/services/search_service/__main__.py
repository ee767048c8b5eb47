"""Entry point: `python -m labkit.services.search_service --host 127.0.0.1 --port PORT --data-dir DIR`.

Introduced in notebooks/02_index_data.ipynb.

Binds only the given host, logs to stderr (never keys or request bodies), creates
`DIR/keys.json` (mode 0600) on first start and reuses it afterwards.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

# One BLAS thread: a query is a single matrix-vector product, and on a small, busy machine
# OpenBLAS's thread hand-off costs several times the product itself. Set before numpy loads.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m labkit.services.search_service",
        description="Local service speaking the Azure AI Search REST API.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, required=True, help="TCP port to listen on")
    parser.add_argument("--data-dir", type=Path, required=True, help="folder for keys.json and the indexes")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    args = parser.parse_args(argv)

    logging.basicConfig(
        stream=sys.stderr,
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    log = logging.getLogger("labkit.search_service")

    import uvicorn

    from .app import create_app
    from .engine import SearchEngine
    from .keys import load_or_create_keys

    data_dir = args.data_dir.expanduser().resolve()
    keys = load_or_create_keys(data_dir)
    engine = SearchEngine(data_dir)
    log.info(
        "search service on http://%s:%d, data in %s, %d index(es)",
        args.host,
        args.port,
        data_dir,
        len(engine.stores),
    )
    uvicorn.run(
        create_app(engine, keys),
        host=args.host,
        port=args.port,
        log_level="warning",
        access_log=False,
        lifespan="on",
        server_header=False,
        date_header=False,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
