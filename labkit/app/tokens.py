"""Sign-in tokens for the chat service: random bearer tokens, stored only as hashes.

Introduced with the HTTP service (notebooks/07_deploy.ipynb). `labkit tokens issue --customer C-001
[--expires 7d]` prints a token once; `LABKIT_HOME/tokens.json` keeps its SHA-256, the customer id,
the creation and expiry times and whether it was revoked - never the token itself. The service maps
a token to its customer; the customer id is taken from the token only, never from the request.

In the cloud, Entra ID replaces these tokens: the service validates a JWT (issuer, audience,
signature from the tenant's keys) and maps a claim to the customer id. That path is documented in
docs/service.md and not tested here (no tenant offline).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import os
import re
import secrets
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock

from labkit.config import Settings, get_settings

TOKEN_PREFIX = "lk_"
TOKEN_BYTES = 32  # 256 random bits (the issue asks for at least 128)
_DURATION = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


class AuthError(Exception):
    """A missing, unknown, expired or revoked token (the service answers 401)."""


@dataclass
class TokenRecord:
    token_id: str          # first 12 hex characters of the hash: safe to show and to revoke by
    sha256: str
    customer_id: str
    created: float
    expires: float | None  # epoch seconds, None = no expiry
    revoked: bool = False

    def state(self, now: float | None = None) -> str:
        now = time.time() if now is None else now
        if self.revoked:
            return "revoked"
        if self.expires is not None and now >= self.expires:
            return "expired"
        return "active"


def parse_duration(text: str | None) -> float | None:
    """'7d', '12h', '30m', '3600s', '2w' -> seconds; None or 'never' -> None."""
    if text is None or text.strip().lower() == "never":
        return None
    match = _DURATION.match(text)
    if not match or int(match.group(1)) <= 0:
        raise ValueError(f"cannot read the duration {text!r}: write a number and a unit, e.g. 7d, 12h, 30m")
    return int(match.group(1)) * _UNITS[match.group(2)]


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class TokenStore:
    def __init__(self, settings: Settings | None = None):
        self.settings = settings or get_settings()
        self.path: Path = self.settings.home / "tokens.json"
        self._cache: tuple[float, dict[str, TokenRecord]] | None = None

    def _lock(self) -> FileLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        return FileLock(str(self.path) + ".lock", timeout=30)

    def _read(self) -> dict[str, TokenRecord]:
        try:
            mtime = self.path.stat().st_mtime_ns
        except FileNotFoundError:
            return {}
        if self._cache and self._cache[0] == mtime:
            return self._cache[1]
        rows = json.loads(self.path.read_text(encoding="utf-8"))
        records = {r["sha256"]: TokenRecord(**r) for r in rows}
        self._cache = (mtime, records)
        return records

    def _write(self, records: dict[str, TokenRecord]) -> None:
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump([asdict(r) for r in records.values()], f, indent=1)
        os.replace(tmp, self.path)
        self._cache = None

    def issue(self, customer_id: str, expires_in: float | None = None) -> tuple[str, TokenRecord]:
        """A new token for the customer; the token string is returned once and never stored."""
        token = TOKEN_PREFIX + secrets.token_urlsafe(TOKEN_BYTES)
        digest = _hash(token)
        now = time.time()
        record = TokenRecord(digest[:12], digest, customer_id, now,
                             None if expires_in is None else now + expires_in)
        with self._lock():
            records = dict(self._read())
            records[digest] = record
            self._write(records)
        return token, record

    def list(self) -> list[TokenRecord]:
        return sorted(self._read().values(), key=lambda r: r.created)

    def revoke(self, token_id: str | None = None, customer_id: str | None = None) -> int:
        """Revoke by token id (or its prefix of at least 6 characters) or every token of a customer."""
        if not token_id and not customer_id:
            raise ValueError("name a token id or a customer")
        if token_id is not None and len(token_id) < 6:
            raise ValueError("give at least 6 characters of the token id")
        with self._lock():
            records = dict(self._read())
            hits = [r for r in records.values() if not r.revoked and (
                (token_id and r.token_id.startswith(token_id))
                or (customer_id and r.customer_id == customer_id))]
            for r in hits:
                r.revoked = True
            if hits:
                self._write(records)
        return len(hits)

    def customer_for(self, token: str | None) -> str:
        """The customer id a bearer token stands for, or AuthError saying why not (no token text)."""
        if not token:
            raise AuthError("sign in: send Authorization: Bearer <token>")
        digest = _hash(token.strip())
        record = self._read().get(digest)
        if record is None or not hmac.compare_digest(record.sha256, digest):
            raise AuthError("the token is not valid")
        state = record.state()
        if state != "active":
            raise AuthError(f"the token is {state}")
        return record.customer_id


def describe(record: TokenRecord) -> dict[str, Any]:
    """A row for `labkit tokens list` (no hash beyond the short id)."""
    def when(ts: float | None) -> str:
        return "never" if ts is None else dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="minutes")

    return {"token_id": record.token_id, "customer_id": record.customer_id, "created": when(record.created),
            "expires": when(record.expires), "state": record.state()}
