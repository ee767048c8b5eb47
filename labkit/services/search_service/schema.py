"""Index definitions: validation and Azure's defaults.

Introduced in notebooks/02_index_data.ipynb.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from .errors import bad_request, unsupported

STRING, INT32, INT64, DOUBLE, BOOLEAN, DATETIME = (
    "Edm.String",
    "Edm.Int32",
    "Edm.Int64",
    "Edm.Double",
    "Edm.Boolean",
    "Edm.DateTimeOffset",
)
STRING_COLLECTION = "Collection(Edm.String)"
VECTOR = "Collection(Edm.Single)"
SIMPLE_TYPES = (STRING, INT32, INT64, DOUBLE, BOOLEAN, DATETIME)
KNOWN_AZURE_TYPES = {
    "Edm.GeographyPoint",
    "Edm.ComplexType",
    "Edm.Single",
    "Edm.Half",
    "Edm.Int16",
    "Edm.SByte",
    "Edm.Byte",
}
INDEX_NAME = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,126}[a-z0-9])?$")
FIELD_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,127}$")
KEY_VALUE = re.compile(r"^[A-Za-z0-9_\-=]{1,1024}$")
METRICS = ("cosine", "euclidean", "dotProduct")
_FIELD_KEYS = {
    "name",
    "type",
    "key",
    "retrievable",
    "hidden",
    "stored",
    "searchable",
    "filterable",
    "sortable",
    "facetable",
    "analyzer",
    "searchAnalyzer",
    "indexAnalyzer",
    "normalizer",
    "dimensions",
    "vectorSearchProfile",
    "vectorEncoding",
    "synonymMaps",
    "fields",
}
_ATTRS = ("key", "searchable", "filterable", "sortable", "facetable")


@dataclass
class Field:
    name: str
    type: str
    key: bool
    retrievable: bool
    stored: bool
    searchable: bool
    filterable: bool
    sortable: bool
    facetable: bool
    dimensions: int | None = None
    profile: str | None = None
    analyzer: str | None = None

    @property
    def is_vector(self) -> bool:
        return self.type == VECTOR

    @property
    def is_collection(self) -> bool:
        return self.type == STRING_COLLECTION

    @property
    def is_simple(self) -> bool:
        return self.type in SIMPLE_TYPES

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.type,
            "searchable": self.searchable,
            "filterable": self.filterable,
            "retrievable": self.retrievable,
            "stored": self.stored,
            "sortable": self.sortable,
            "facetable": self.facetable,
            "key": self.key,
            "analyzer": self.analyzer,
            "searchAnalyzer": None,
            "indexAnalyzer": None,
            "normalizer": None,
            "dimensions": self.dimensions,
            "vectorSearchProfile": self.profile,
            "vectorEncoding": None,
            "synonymMaps": [],
        }


def _flag(raw: dict[str, Any], name: str, default: bool, where: str) -> bool:
    value = raw.get(name)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise bad_request(f"The property '{name}' of {where} must be true or false.")
    return value


def parse_field(raw: Any, profiles: dict[str, str]) -> Field:
    if not isinstance(raw, dict):
        raise bad_request("Each entry of 'fields' must be an object.")
    name, ftype = raw.get("name"), raw.get("type")
    if not isinstance(name, str) or not FIELD_NAME.match(name) or name.startswith("azureSearch"):
        raise bad_request(
            f"Invalid field name '{name}'. Field names must start with a letter and contain "
            "only letters, digits or underscores (at most 128 characters)."
        )
    where = f"field '{name}'"
    for extra in raw:
        if extra not in _FIELD_KEYS and raw[extra] is not None:
            raise unsupported(f"The field property '{extra}' (on {where})")
    if not isinstance(ftype, str):
        raise bad_request(f"The field '{name}' has no type.")
    if ftype not in SIMPLE_TYPES and ftype not in (STRING_COLLECTION, VECTOR):
        inner = ftype[11:-1] if ftype.startswith("Collection(") and ftype.endswith(")") else ftype
        if inner in SIMPLE_TYPES or inner in KNOWN_AZURE_TYPES:
            raise unsupported(f"The field type '{ftype}' (field '{name}')")
        raise bad_request(f"The field '{name}' has an invalid type '{ftype}'.")
    if raw.get("fields"):
        raise unsupported(f"Sub-fields (field '{name}')")
    analyzer = raw.get("analyzer")
    if analyzer not in (None, "standard.lucene"):
        raise unsupported(f"The analyzer '{analyzer}' (field '{name}'); only 'standard.lucene' is available")
    for prop in ("searchAnalyzer", "indexAnalyzer", "normalizer", "vectorEncoding"):
        if raw.get(prop) is not None:
            raise unsupported(f"The field property '{prop}' (field '{name}')")
    if raw.get("synonymMaps"):
        raise unsupported(f"Synonym maps (field '{name}')")
    vector = ftype == VECTOR
    collection = ftype == STRING_COLLECTION
    retrievable_default = not vector
    if raw.get("hidden") is not None:
        retrievable_default = not _flag(raw, "hidden", False, where)
    fld = Field(
        name=name,
        type=ftype,
        key=_flag(raw, "key", False, where),
        retrievable=_flag(raw, "retrievable", retrievable_default, where),
        stored=_flag(raw, "stored", True, where),
        searchable=_flag(raw, "searchable", ftype in (STRING, STRING_COLLECTION, VECTOR), where),
        filterable=_flag(raw, "filterable", not vector, where),
        sortable=_flag(raw, "sortable", not (vector or collection), where),
        facetable=_flag(raw, "facetable", not vector, where),
        analyzer=analyzer,
    )
    if not fld.stored and fld.retrievable:
        raise bad_request(f"The field '{name}' cannot be retrievable when 'stored' is false.")
    if not fld.stored and not vector:
        raise bad_request(f"Only vector fields can set 'stored' to false (field '{name}').")
    if fld.searchable and ftype not in (STRING, STRING_COLLECTION, VECTOR):
        raise bad_request(
            f"The field '{name}' of type {ftype} cannot be searchable. Only fields of type "
            "Edm.String, Collection(Edm.String) or vector fields can be searchable."
        )
    if fld.sortable and (collection or vector):
        raise bad_request(f"The field '{name}' cannot be sortable because it is a collection.")
    if fld.key and (ftype != STRING or not fld.retrievable):
        raise bad_request(f"The key field '{name}' must be a retrievable field of type Edm.String.")
    if vector:
        if fld.filterable or fld.sortable or fld.facetable or fld.key:
            raise bad_request(
                f"The vector field '{name}' cannot be filterable, sortable, facetable or a key."
            )
        dims, profile = raw.get("dimensions"), raw.get("vectorSearchProfile")
        if not isinstance(dims, int) or isinstance(dims, bool) or not 2 <= dims <= 4096:
            raise bad_request(f"The vector field '{name}' must set 'dimensions' between 2 and 4096.")
        if not isinstance(profile, str) or not profile:
            raise bad_request(f"The vector field '{name}' must set 'vectorSearchProfile'.")
        if profile not in profiles:
            raise bad_request(
                f"The vector field '{name}' references the vector search profile '{profile}' "
                "that is not defined in 'vectorSearch.profiles'."
            )
        fld.dimensions, fld.profile = dims, profile
    elif raw.get("dimensions") is not None or raw.get("vectorSearchProfile") is not None:
        raise bad_request(
            f"Only fields of type {VECTOR} can set 'dimensions' and 'vectorSearchProfile' (field '{name}')."
        )
    return fld


def _objects(value: Any, what: str) -> list[dict[str, Any]]:
    """A JSON array of objects (null counts as empty); 400 otherwise."""
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise bad_request(f"'{what}' must be an array of objects.")
    return value


def parse_vector_search(raw: Any) -> tuple[dict[str, Any] | None, dict[str, str]]:
    """Normalised `vectorSearch` section and the metric of each profile."""
    if raw is None:
        return None, {}
    if not isinstance(raw, dict):
        raise bad_request("'vectorSearch' must be an object.")
    if raw.get("compressions"):
        raise unsupported("Vector compression ('vectorSearch.compressions')")
    algorithms: dict[str, str] = {}
    out_algorithms = []
    for algo in _objects(raw.get("algorithms"), "vectorSearch.algorithms"):
        name, kind = algo.get("name"), algo.get("kind")
        if not isinstance(name, str) or not name:
            raise bad_request("Each vector search algorithm needs a 'name'.")
        if kind not in ("hnsw", "exhaustiveKnn"):
            raise bad_request(
                f"The vector search algorithm '{name}' has an invalid kind '{kind}'; "
                "use 'hnsw' or 'exhaustiveKnn'."
            )
        pkey = "hnswParameters" if kind == "hnsw" else "exhaustiveKnnParameters"
        params = algo.get(pkey) or {}
        if not isinstance(params, dict):
            raise bad_request(f"'{pkey}' of the vector search algorithm '{name}' must be an object.")
        params = dict(params)
        metric = params.get("metric") or "cosine"
        if not isinstance(metric, str) or metric not in METRICS:
            raise (
                unsupported(f"The vector metric '{metric}'")
                if metric == "hamming"
                else bad_request(f"The vector search algorithm '{name}' has an invalid metric '{metric}'.")
            )
        params["metric"] = metric
        if kind == "hnsw":
            params = {"m": 4, "efConstruction": 400, "efSearch": 500} | {
                k: v for k, v in params.items() if v is not None
            }
        algorithms[name] = metric
        out_algorithms.append({"name": name, "kind": kind, pkey: params})
    profiles: dict[str, str] = {}
    out_profiles = []
    for prof in _objects(raw.get("profiles"), "vectorSearch.profiles"):
        name, algo = prof.get("name"), prof.get("algorithm")
        if not isinstance(name, str) or not name:
            raise bad_request("Each vector search profile needs a 'name'.")
        if not isinstance(algo, str) or algo not in algorithms:
            raise bad_request(
                f"The vector search profile '{name}' references the algorithm '{algo}' "
                "that is not defined in 'vectorSearch.algorithms'."
            )
        if prof.get("compression"):
            raise unsupported(f"Vector compression (profile '{name}')")
        profiles[name] = algorithms[algo]
        out_profiles.append(
            {"name": name, "algorithm": algo, "vectorizer": prof.get("vectorizer"), "compression": None}
        )
    section = {
        "algorithms": out_algorithms,
        "profiles": out_profiles,
        "vectorizers": _objects(raw.get("vectorizers"), "vectorSearch.vectorizers"),
        "compressions": [],
    }
    return section, profiles


_INDEX_KEYS = {
    "name",
    "description",
    "fields",
    "scoringProfiles",
    "defaultScoringProfile",
    "corsOptions",
    "suggesters",
    "analyzers",
    "tokenizers",
    "tokenFilters",
    "charFilters",
    "normalizers",
    "encryptionKey",
    "similarity",
    "semantic",
    "vectorSearch",
    "@odata.etag",
    "@odata.context",
}


@dataclass
class IndexSchema:
    name: str
    fields: list[Field]
    definition: dict[str, Any]
    metrics: dict[str, str]  # vector field name -> metric

    def __post_init__(self) -> None:
        self.by_name = {f.name: f for f in self.fields}
        self.key = next(f for f in self.fields if f.key)

    def field(self, name: str) -> Field | None:
        return self.by_name.get(name)

    @property
    def searchable_text(self) -> list[Field]:
        return [f for f in self.fields if f.searchable and not f.is_vector]

    @property
    def vector_fields(self) -> list[Field]:
        return [f for f in self.fields if f.is_vector]


def parse_index(raw: Any, name: str | None = None) -> IndexSchema:
    """Validate an index definition and fill in Azure's defaults."""
    if not isinstance(raw, dict):
        raise bad_request("The request body must be a JSON object with the index definition.")
    for extra in raw:
        if extra not in _INDEX_KEYS and raw[extra] not in (None, [], {}):
            raise unsupported(f"The index property '{extra}'")
    index_name = raw.get("name")
    if name is not None and index_name is None:
        index_name = name
    if not isinstance(index_name, str) or not INDEX_NAME.match(index_name):
        raise bad_request(
            f"Invalid index name '{index_name}'. Index names must only contain lowercase letters, "
            "digits or dashes, cannot start or end with dashes and are limited to 128 characters."
        )
    if name is not None and index_name != name:
        raise bad_request(
            f"The index name '{index_name}' in the body does not match the name '{name}' in the URL."
        )
    for prop in ("analyzers", "tokenizers", "tokenFilters", "charFilters", "normalizers"):
        if raw.get(prop):
            raise unsupported(f"Custom text analysis ('{prop}')")
    if raw.get("encryptionKey"):
        raise unsupported("Customer-managed encryption keys ('encryptionKey')")
    if raw.get("defaultScoringProfile"):
        raise unsupported("A default scoring profile ('defaultScoringProfile')")
    similarity = raw.get("similarity")
    if similarity is not None and not isinstance(similarity, dict):
        raise bad_request("'similarity' must be an object.")
    if similarity:
        kind = similarity.get("@odata.type", "#Microsoft.Azure.Search.BM25Similarity")
        k1, b = similarity.get("k1"), similarity.get("b")
        if kind != "#Microsoft.Azure.Search.BM25Similarity" or k1 not in (None, 1.2) or b not in (None, 0.75):
            raise unsupported("A similarity other than BM25 with k1=1.2 and b=0.75")
    vector_search, profiles = parse_vector_search(raw.get("vectorSearch"))
    raw_fields = raw.get("fields")
    if not isinstance(raw_fields, list) or not raw_fields:
        raise bad_request("The index must define at least one field in 'fields'.")
    fields = [parse_field(f, profiles) for f in raw_fields]
    seen: set[str] = set()
    for fld in fields:
        if fld.name in seen:
            raise bad_request(f"The field name '{fld.name}' is used more than once.")
        seen.add(fld.name)
    keys = [f for f in fields if f.key]
    if len(keys) != 1:
        raise bad_request(
            f"The index must have exactly one key field of type Edm.String (found {len(keys)})."
        )
    definition = {
        "name": index_name,
        "description": raw.get("description"),
        "defaultScoringProfile": None,
        "fields": [f.to_json() for f in fields],
        "scoringProfiles": _objects(raw.get("scoringProfiles"), "scoringProfiles"),
        "corsOptions": raw.get("corsOptions"),
        "suggesters": _objects(raw.get("suggesters"), "suggesters"),
        "analyzers": [],
        "tokenizers": [],
        "tokenFilters": [],
        "charFilters": [],
        "normalizers": [],
        "encryptionKey": None,
        "similarity": {"@odata.type": "#Microsoft.Azure.Search.BM25Similarity", "k1": None, "b": None},
        "semantic": raw.get("semantic"),
        "vectorSearch": vector_search,
    }
    metrics = {f.name: profiles[f.profile] for f in fields if f.is_vector and f.profile}
    return IndexSchema(index_name, fields, definition, metrics)


def check_update(old: IndexSchema, new: IndexSchema) -> None:
    """Azure lets an update add fields and change `retrievable`, nothing that needs a rebuild."""
    for fld in old.fields:
        now = new.field(fld.name)
        if now is None:
            raise bad_request(
                f"Existing field '{fld.name}' cannot be deleted from the index '{old.name}'. "
                "Delete and recreate the index to remove fields."
            )
        changed = [
            a
            for a in (*_ATTRS, "type", "dimensions", "analyzer", "stored", "profile")
            if getattr(fld, a) != getattr(now, a)
        ]
        if changed:
            raise bad_request(
                f"Existing field '{fld.name}' cannot be changed ({', '.join(changed)}). "
                "Delete and recreate the index to change it."
            )
