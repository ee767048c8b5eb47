"""Document values: type checks and conversions between JSON, stored bodies and SQL columns.

Introduced in notebooks/02_index_data.ipynb.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import numpy as np

from .errors import SearchError, bad_request
from .schema import BOOLEAN, DATETIME, DOUBLE, INT32, INT64, STRING, STRING_COLLECTION, Field, IndexSchema

Action = tuple[str, str, dict[str, Any], dict[str, Any]]  # (action, key, body values, vectors)


def _cannot(value: Any, ftype: str) -> SearchError:
    shown = str(value)[:100] if isinstance(value, str | int | float) else type(value).__name__
    return bad_request(
        f"The request is invalid. Details: Cannot convert the literal '{shown}' to the "
        f"expected type '{ftype}'."
    )


def parse_datetime(text: str) -> datetime | None:
    """ISO 8601 with a time zone (Z or +hh:mm), or a date alone (midnight UTC); None if invalid."""
    value = text.strip()
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        value += "T00:00:00Z"
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,7})?)?(Z|z|[+-]\d{2}:\d{2})", value):
        return None
    frac = re.search(r"\.(\d+)", value)
    if frac and len(frac.group(1)) > 6:
        value = value.replace(frac.group(0), "." + frac.group(1)[:6])
    try:
        return datetime.fromisoformat(value.replace("z", "Z")).astimezone(UTC)
    except ValueError:
        return None


def datetime_sort_key(moment: datetime) -> str:
    """Fixed-width UTC text whose lexicographic order is chronological (stored in SQL columns)."""
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def datetime_display(moment: datetime) -> str:
    """Azure's rendering: seconds, milliseconds only when present, always 'Z'."""
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    if moment.microsecond:
        text += f".{moment.microsecond // 1000:03d}"
    return text + "Z"


def display_from_sort_key(key: str) -> str:
    return datetime_display(datetime.strptime(key, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC))


def convert_value(fld: Field, value: Any) -> tuple[Any, Any]:
    """(value kept in the document body, value for SQL columns / vectors). Raises 400 on a bad value."""
    if value is None:
        return None, None
    ftype = fld.type
    if ftype == STRING:
        if not isinstance(value, str):
            raise _cannot(value, ftype)
        return value, value
    if ftype in (INT32, INT64):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool):
            raise _cannot(value, ftype)
        bits = 31 if ftype == INT32 else 63
        if not -(2**bits) <= value < 2**bits:
            raise _cannot(value, ftype)
        return value, value
    if ftype == DOUBLE:
        if (
            not isinstance(value, int | float)
            or isinstance(value, bool)
            or value != value
            or value in (float("inf"), float("-inf"))
        ):
            raise _cannot(value, ftype)
        return value, float(value)
    if ftype == BOOLEAN:
        if not isinstance(value, bool):
            raise _cannot(value, ftype)
        return value, int(value)
    if ftype == DATETIME:
        moment = parse_datetime(value) if isinstance(value, str) else None
        if moment is None:
            raise _cannot(value, ftype)
        return datetime_display(moment), datetime_sort_key(moment)
    if ftype == STRING_COLLECTION:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise bad_request(
                f"The request is invalid. Details: The field '{fld.name}' expects a JSON array of strings."
            )
        return list(value), list(value)
    # vector: one numpy conversion checks the element types (numbers only, no strings/null/nesting)
    try:
        arr = np.asarray(value) if isinstance(value, list) else None
    except (ValueError, TypeError):
        arr = None
    if arr is None or arr.ndim != 1 or arr.dtype.kind not in "iuf" or (not len(value)):
        raise bad_request(
            f"The request is invalid. Details: The vector field '{fld.name}' expects a JSON array of numbers."
        )
    if len(value) != fld.dimensions:
        raise bad_request(
            f"The vector field '{fld.name}', with dimension of '{fld.dimensions}', expects a length "
            f"of '{fld.dimensions}'. However, the provided length is '{len(value)}'."
        )
    arr = arr.astype(np.float32)
    if not np.isfinite(arr).all():
        raise bad_request(f"The vector field '{fld.name}' contains a value that is not a finite number.")
    return None, arr


def check_key(value: Any, key_name: str) -> str:
    if value is None or value == "":
        raise bad_request(
            f"The request is invalid. Details: The key field '{key_name}' is missing or empty in a document."
        )
    if not isinstance(value, str):
        raise _cannot(value, STRING)
    return value


def prepare_actions(schema: IndexSchema, actions: Any) -> list[Action]:
    """Validate a whole batch before anything is written: (action, key, body values, vectors)."""
    if not isinstance(actions, list):
        raise bad_request("The request is invalid. Details: 'value' must be an array of index actions.")
    if len(actions) > 32000:
        raise bad_request("The request is invalid. Details: a batch can hold at most 32000 actions.")
    key_name = schema.key.name
    prepared = []
    for item in actions:
        if not isinstance(item, dict):
            raise bad_request("The request is invalid. Details: each index action must be a JSON object.")
        action = item.get("@search.action", "upload")
        if action not in ("upload", "merge", "mergeOrUpload", "delete"):
            raise bad_request(
                f"The request is invalid. Details: invalid '@search.action' value '{action}'; use "
                "upload, merge, mergeOrUpload or delete."
            )
        key = check_key(item.get(key_name), key_name)
        body: dict[str, Any] = {}
        vectors: dict[str, Any] = {}
        for name, value in item.items():
            if name.startswith("@search."):
                continue
            fld = schema.field(name)
            if fld is None:
                raise bad_request(
                    f"The request is invalid. Details: The property '{name}' does not exist on "
                    f"type 'search.documentFields'. Make sure to only use property names that "
                    "are defined by the type."
                )
            if action == "delete":
                continue
            stored, extra = convert_value(fld, value)
            if fld.is_vector:
                vectors[name] = extra
            else:
                body[name] = stored
        prepared.append((action, key, body, vectors))
    return prepared
