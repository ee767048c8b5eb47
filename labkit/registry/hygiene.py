"""Personal-data hygiene: every store the kit writes, what it may hold, and a scanner that checks it.

Introduced in notebooks/09_operate.ipynb; docs/data-hygiene.md is the same table in prose.

Customer records hold personal data (names, e-mail addresses, phone numbers, addresses). `STORES`
lists each place the kit writes and whether customers' personal data may appear there. `scan()`
reads every file under the state folder (LABKIT_HOME) and the build folder, and every file the kit
commits under `registry/`, `eval/` and `data/finetune/`, for every e-mail address, phone number (any
separators) and name (full name, or a capitalised last name) in `data/customers.json`, and reports
each hit in a store that must not hold them - including files that belong to no listed store, so a
new store is noticed.
"""

from __future__ import annotations

import fnmatch
import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from labkit.config import REPO_ROOT, Settings, get_settings


@dataclass(frozen=True)
class Store:
    pattern: str  # a glob relative to its root ("home", "build" or "repo")
    root: str
    holds: str
    personal: bool  # may it hold customers' names, e-mail addresses or phone numbers?


STORES = [
    Store("store/**", "home", "the customer store (SQLite): customers and orders", True),
    Store(
        "traces.sqlite",
        "home",
        "spans: names, timings, models, tokens, flow versions, guard categories; "
        "message text only with LABKIT_TRACE_CONTENT=1",
        False,
    ),
    Store(
        "logs/requests.jsonl",
        "home",
        "one line per chat request: status, latency, tokens, customer as a keyed hash",
        False,
    ),
    Store("logs/*.log", "home", "service logs: start-up lines and errors, never request bodies", False),
    Store(
        "feedback.jsonl",
        "home",
        "thumbs up/down by request id, customer as a keyed hash, and the customer's "
        "optional free-text comment",
        True,
    ),
    Store(
        "monitor/**", "home", "online-evaluation samples with personal data removed, and their scores", False
    ),
    Store("registry.sqlite", "home", "lineage records: ids, hashes, versions, metrics", False),
    Store(
        "evals/**",
        "home",
        "evaluation results: test questions and the model's answers (which greet the customer by first name)",
        True,
    ),
    Store(
        "finetune/**",
        "home",
        "fine-tuning data and runs: prompts with the customer's first name and orders",
        True,
    ),
    Store("search/**", "home", "the local search indexes: product documents only", False),
    Store(
        "cache/**",
        "home",
        "embedding vectors keyed by text hash, and the guard classifier's cache, which "
        "holds its training prompts (published third-party text, not scanned)",
        True,
    ),
    Store(
        "redteam/**",
        "home",
        "published attack prompts from the red-team wheels (third-party text that may "
        "name anyone; not customer data, not scanned)",
        True,
    ),
    Store(
        "keys/**", "home", "local keys (request-log HMAC key, search keys): secrets, no personal data", False
    ),
    Store("tokens.json*", "home", "sign-in tokens, stored as hashes, with customer ids", False),
    Store("models.json", "home", "fine-tuned models served locally (file paths)", False),
    Store("services/**", "home", "service state files (ports, pids)", False),
    Store(
        "notebooks/**",
        "build",
        "executed notebooks: they show answers that greet customers by first name",
        True,
    ),
    Store("test-notebooks/**", "build", "executed notebooks of the tests (as above)", True),
    Store("operate/**", "build", "notebook 09's evaluation runs (answers, as in LABKIT_HOME/evals)", True),
    Store("eval-*/**", "build", "CI evaluation runs (answers, as in LABKIT_HOME/evals)", True),
    Store("**", "build", "reports, screenshots and synthetic traffic", False),
    Store("registry/**", "repo", "promoted versions and their cards", False),
    Store("eval/**", "repo", "committed baselines and reports (numbers, ids, hashes)", False),
    Store("data/finetune/**", "repo", "the committed fine-tuning data (first names, orders)", True),
]


BINARY = {
    ".gguf",
    ".safetensors",
    ".bin",
    ".pt",
    ".pth",
    ".npy",
    ".npz",
    ".png",
    ".jpg",
    ".jpeg",
    ".whl",
    ".so",
    ".pyc",
}


@dataclass(frozen=True)
class Finding:
    path: Path
    kind: str  # email | phone | name
    value: str
    store: str  # the store's description, or "no listed store"


@functools.cache
def _patterns() -> list[tuple[str, re.Pattern[str]]]:
    from labkit.schema import load_customers

    patterns = []
    for customer in load_customers():
        patterns.append(("email", re.compile(re.escape(customer.email), re.I)))
        digits = re.sub(r"\D", "", customer.phone)
        patterns.append(("phone", re.compile(r"(?<!\d)" + r"[\s.\-()]{0,2}".join(digits) + r"(?!\d)")))
        full = rf"{re.escape(customer.first_name)}[\s_.-]+{re.escape(customer.last_name)}"
        patterns.append(("name", re.compile(rf"(?<![A-Za-z]){full}(?![A-Za-z])", re.I)))
        # a last name alone, capitalised; a first name alone is not searched: "Grace", "Owen" or "Noor"
        # are ordinary words and greetings, and no store that may not hold names writes them
        patterns.append(("name", re.compile(rf"(?<![A-Za-z]){re.escape(customer.last_name)}(?![A-Za-z])")))
    return patterns


def store_of(path: Path, roots: dict[str, Path]) -> Store | None:
    """The first listed store a file belongs to (None: written by no listed store)."""
    for store in STORES:
        root = roots.get(store.root)
        if root is None:
            continue
        try:
            relative = path.resolve().relative_to(root.resolve()).as_posix()
        except ValueError:
            continue
        if fnmatch.fnmatch(relative, store.pattern) or fnmatch.fnmatch(
            relative, store.pattern.replace("/**", "")
        ):
            return store
    return None


def _files(roots: dict[str, Path]) -> Iterable[Path]:
    seen: set[Path] = set()
    for name, root in roots.items():
        if not root.exists():
            continue
        folders = [root] if name != "repo" else [root / "registry", root / "eval", root / "data" / "finetune"]
        for folder in folders:
            for path in sorted(folder.rglob("*")) if folder.exists() else []:
                if path.is_file() and path.resolve() not in seen:
                    seen.add(path.resolve())
                    yield path


def scan(
    settings: Settings | None = None, roots: dict[str, Path] | None = None, max_bytes: int = 50_000_000
) -> list[Finding]:
    """Every e-mail, phone number or name of a customer found where it must not be."""
    settings = settings or get_settings()
    roots = roots or {"home": settings.home, "build": REPO_ROOT / "build", "repo": REPO_ROOT}
    findings = []
    for path in _files(roots):
        store = store_of(path, roots)
        if store is not None and store.personal:
            continue
        if path.suffix in BINARY or path.stat().st_size > max_bytes:
            continue  # model weights and images: no text to search (a screenshot is not read)
        text = path.read_bytes().decode("utf-8", errors="ignore")
        lowered = text.lower()
        if not any(token in lowered for token in _tokens()):  # fast substring checks first
            continue
        for kind, pattern in _patterns():
            match = pattern.search(text)
            if match:
                findings.append(
                    Finding(
                        path, kind, match.group(0), store.holds if store is not None else "no listed store"
                    )
                )
    return findings


@functools.cache
def _tokens() -> tuple[str, ...]:
    """Lower-case substrings every hit must contain: e-mails, last names, the phones' last four digits."""
    from labkit.schema import load_customers

    tokens: set[str] = set()
    for customer in load_customers():
        tokens |= {customer.email.lower(), customer.last_name.lower(), re.sub(r"\D", "", customer.phone)[-4:]}
    return tuple(sorted(tokens))
