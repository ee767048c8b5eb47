"""The whole local fine-tune in one call (`labkit finetune`), and the committed reference adapter.

Introduced in notebooks/05_fine_tune.ipynb. `finetune()` builds the data (flow.prepare with the
short prompt shape), validates it, trains a LoRA adapter (reused when data and settings are
unchanged), converts it to GGUF and registers it with the local model server under a model name.

The reference adapter (`data/models/contoso-chat-small-ft.lora.gguf`, about 10 MB, with a card
beside it holding its data hash, settings and measured results) was made by
`labkit finetune --reference`; the model server serves it under `REFERENCE_MODEL` on every fresh
clone, so notebooks 06-09, the service and CI use it without training (`eval/small.json`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from labkit.config import REPO_ROOT, Settings, get_settings

REFERENCE_MODEL = "contoso-chat-small-ft"
REFERENCE_DIR = REPO_ROOT / "data" / "models"
REFERENCE_GGUF = REFERENCE_DIR / f"{REFERENCE_MODEL}.lora.gguf"
REFERENCE_CARD = REFERENCE_DIR / f"{REFERENCE_MODEL}.json"
DATA_DIR = REPO_ROOT / "data" / "finetune"
# the settings the reference adapter was trained with (its card records them too)
REFERENCE_SETTINGS: dict[str, Any] = {
    "r": 16,
    "alpha": 32,
    "learning_rate": 1e-3,
    "max_steps": 150,
    "batch_size": 4,
    "warmup_steps": 6,
    "max_length": 1024,
    "seed": 42,
}


def finetune(
    out_dir: str | Path | None = None,
    *,
    data_dir: str | Path = DATA_DIR,
    name: str = "contoso-ft",
    max_steps: int | None = None,
    rebuild_data: bool = False,
    n_train: int = 360,
    n_valid: int = 60,
    progress: bool = True,
    settings: Settings | None = None,
    **train_settings: Any,
) -> dict[str, Any]:
    """Data -> validation -> LoRA training -> GGUF -> registered as `name`. Returns what each step did.

    `data_dir` holding train.jsonl and valid.jsonl is used as it is unless `rebuild_data`; training
    settings default to the reference adapter's (`max_steps` and any `TrainConfig` field override)."""
    from labkit.finetune import data, train, validate

    settings = settings or get_settings()
    out = Path(out_dir) if out_dir is not None else settings.home / "finetune" / name
    data_path = Path(data_dir)
    built = None
    if rebuild_data or not (data_path / "train.jsonl").is_file():
        built = data.build(data_path, n_train=n_train, n_valid=n_valid, progress=progress)
    checks = {split: validate.validate_file(data_path / f"{split}.jsonl") for split in ("train", "valid")}
    bad = [report.summary() for report in checks.values() if not report.ok]
    if bad:
        raise ValueError("the fine-tuning files have problems; fix them before training:\n" + "\n".join(bad))
    config = train.TrainConfig(
        **{**REFERENCE_SETTINGS, **({"max_steps": max_steps} if max_steps else {}), **train_settings}
    )
    report = train.train_lora(
        data_path / "train.jsonl",
        data_path / "valid.jsonl",
        out_dir=out,
        config=config,
        progress=progress,
        settings=settings,
    )
    gguf = train.convert_to_gguf(report.adapter_dir, out / f"{name}.lora.gguf", settings=settings)
    train.serve_adapter(name, gguf, settings=settings)
    return {
        "name": name,
        "gguf": str(gguf),
        "gguf_bytes": gguf.stat().st_size,
        "train": report,
        "data": built,
        "validation": {k: v.summary().splitlines()[0] for k, v in checks.items()},
    }


def reference_card() -> dict[str, Any]:
    """The committed reference adapter's card (data hash, settings, measured results)."""
    return json.loads(REFERENCE_CARD.read_text(encoding="utf-8")) if REFERENCE_CARD.is_file() else {}
