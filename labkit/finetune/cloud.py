"""The cloud path: the same fine-tuning files through the OpenAI / Azure OpenAI fine-tuning API.

Introduced in notebooks/05_fine_tune.ipynb. Active only when the chat backend is `openai` or
`azure` and configured; on the embedded default every function raises a `ConfigError` that says
so and names the variables to set (never their values). Not exercised against a real cloud here
(no key offline); the request shapes follow the public fine-tuning API of the `openai` SDK:

- `files.create(file=..., purpose="fine-tune")` uploads a JSONL file;
- `fine_tuning.jobs.create(model=..., training_file=..., validation_file=..., hyperparameters=...)`;
- `fine_tuning.jobs.retrieve(id)` until the status is `succeeded`, `failed` or `cancelled`; the
  job's `fine_tuned_model` is the new model's name. On Azure OpenAI that model must then be
  deployed (portal, CLI or Bicep) and the deployment name set as `AZURE_OPENAI_CHAT_DEPLOYMENT`
  (or a FlowConfig's `chat_model`).

Validate and price the files first (`labkit.finetune.validate`): a cloud job is billed per
trained token and a bad file fails only after upload.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from labkit.config import ConfigError, Settings, get_settings

DONE = {"succeeded", "failed", "cancelled"}


@dataclass
class CloudJob:
    id: str
    status: str
    model: str
    fine_tuned_model: str | None = None
    trained_tokens: int | None = None
    error: str | None = None


def _client(settings: Settings) -> Any:
    backend = settings.backend_for("chat")
    if backend == "local":
        raise ConfigError("the cloud fine-tuning path needs LABKIT_CHAT_BACKEND=openai or azure (with its "
                          "keys); the embedded default fine-tunes locally (labkit.finetune.train)")
    settings.check(["chat"])
    from labkit import models

    return models.chat_client(settings, max_retries=2, timeout=300)


def submit(train_path: str | Path, valid_path: str | Path | None = None, *, model: str,
           epochs: int | None = None, suffix: str = "contoso-chat",
           settings: Settings | None = None) -> CloudJob:
    """Upload the files and create a fine-tuning job for `model` (a base model the provider can
    fine-tune, for example `gpt-4.1-mini-2025-04-14`). Returns the job as created."""
    settings = settings or get_settings()
    client = _client(settings)
    with open(train_path, "rb") as f:
        train_file = client.files.create(file=f, purpose="fine-tune")
    valid_id = None
    if valid_path is not None:
        with open(valid_path, "rb") as f:
            valid_id = client.files.create(file=f, purpose="fine-tune").id
    kwargs: dict[str, Any] = {"model": model, "training_file": train_file.id, "suffix": suffix}
    if valid_id:
        kwargs["validation_file"] = valid_id
    if epochs is not None:
        kwargs["hyperparameters"] = {"n_epochs": epochs}
    return _job(client.fine_tuning.jobs.create(**kwargs))


def _job(raw: Any) -> CloudJob:
    error = getattr(raw, "error", None)
    return CloudJob(id=raw.id, status=raw.status, model=raw.model,
                    fine_tuned_model=getattr(raw, "fine_tuned_model", None),
                    trained_tokens=getattr(raw, "trained_tokens", None),
                    error=getattr(error, "message", None) if error else None)


def wait(job_id: str, *, poll_s: float = 30.0, timeout_s: float = 6 * 3600,
         on_update: Callable[[CloudJob], None] | None = None, settings: Settings | None = None) -> CloudJob:
    """Poll until the job is done (progress through `on_update`); a job takes minutes to hours."""
    settings = settings or get_settings()
    client = _client(settings)
    deadline = time.monotonic() + timeout_s
    while True:
        job = _job(client.fine_tuning.jobs.retrieve(job_id))
        if on_update:
            on_update(job)
        if job.status in DONE:
            return job
        if time.monotonic() > deadline:
            raise TimeoutError(f"fine-tuning job {job_id} still {job.status} after {timeout_s:.0f} s; "
                               "it keeps running in the cloud: call wait() again later")
        time.sleep(poll_s)
