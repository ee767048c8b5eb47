"""The Contoso Chat HTTP service as a background service of the manager (service `app`).

Introduced in notebooks/07_deploy.ipynb (and `labkit serve`, docs/service.md). The manager starts
it as `python -m labkit.services.app --port P [--config FILE]` after the model and search services
it needs are healthy, so it recognises the process as its own and `labkit services down` stops it.
The app never starts services itself: the manager holds its lock while it waits for health.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def load_flow_config(path: str | Path | None):  # -> flow.FlowConfig | None
    """A FlowConfig from a JSON or YAML file (one object), or None for the default."""
    if path is None:
        return None
    import yaml

    from labkit.flow import FlowConfig

    data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    return FlowConfig.model_validate(data)


def run(host: str, port: int, config_path: str | Path | None = None) -> None:
    """Serve the app with uvicorn in this process (blocks)."""
    import uvicorn

    from labkit.app.main import create_app
    from labkit.config import get_settings

    settings = get_settings()
    uvicorn.run(create_app(settings, load_flow_config(config_path)), host=host, port=port,
                log_level="warning")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m labkit.services.app", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--config", default=None, help="a FlowConfig JSON/YAML file")
    args = parser.parse_args(argv)
    run(args.host, args.port, args.config)
    return 0


if __name__ == "__main__":
    sys.exit(main())
