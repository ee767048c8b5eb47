"""The service's admin and query API keys, kept in `DATA_DIR/keys.json` with mode 0600.

Introduced in notebooks/02_index_data.ipynb.
"""

from __future__ import annotations

import hmac
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

KEYS_FILE = "keys.json"


@dataclass(frozen=True)
class ApiKeys:
    admin_key: str
    query_key: str

    def __repr__(self) -> str:  # never show the secrets
        return "ApiKeys(admin_key=***, query_key=***)"

    def role(self, presented: str | None) -> str | None:
        """'admin', 'query' or None for a missing or unknown key (constant-time comparisons)."""
        if not presented:
            return None
        given = presented.encode()
        if hmac.compare_digest(given, self.admin_key.encode()):
            return "admin"
        if hmac.compare_digest(given, self.query_key.encode()):
            return "query"
        return None


def _new_key() -> str:
    return secrets.token_urlsafe(39).replace("-", "A").replace("_", "z")  # 52 characters, like Azure


def load_or_create_keys(data_dir: Path) -> ApiKeys:
    """Reuse `keys.json` if present, otherwise create it atomically with mode 0600."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / KEYS_FILE
    if path.exists():
        data = json.loads(path.read_text(encoding="utf-8"))
        admin, query = data.get("admin_key"), data.get("query_key")
        if not (isinstance(admin, str) and isinstance(query, str) and len(admin) >= 32 and len(query) >= 32):
            raise RuntimeError(f"{path} is malformed: delete it to generate new keys")
        if (path.stat().st_mode & 0o777) != 0o600:
            path.chmod(0o600)
        return ApiKeys(admin, query)
    keys = ApiKeys(_new_key(), _new_key())
    tmp = path.with_name(f".{KEYS_FILE}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump({"admin_key": keys.admin_key, "query_key": keys.query_key}, handle)
    os.chmod(tmp, 0o600)
    try:
        os.link(tmp, path)  # never replaces keys that another process wrote in the meantime
    except FileExistsError:
        return load_or_create_keys(data_dir)
    finally:
        tmp.unlink(missing_ok=True)
    return keys
