"""The cloud fine-tuning path through the real `openai` SDK, against a stand-in of the fine-tuning
API on 127.0.0.1 (no cloud key offline): upload, create, poll, and the clear error on the local default."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from labkit.config import ConfigError
from labkit.finetune import cloud


class FineTuningStandIn:
    """Answers /files, /fine_tuning/jobs and /fine_tuning/jobs/{id} like the public API; the job
    succeeds on the second poll. Records what the SDK sent."""

    def __init__(self) -> None:
        self.uploads: list[bytes] = []
        self.created: list[dict[str, Any]] = []
        self.polls = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _job(self, status: str) -> dict[str, Any]:
                return {"id": "ftjob-1", "object": "fine_tuning.job", "status": status, "model": "gpt-4.1-mini",
                        "created_at": 1, "fine_tuned_model": "ft:gpt-4.1-mini:contoso" if status == "succeeded"
                        else None, "trained_tokens": 1234 if status == "succeeded" else None,
                        "training_file": "file-1", "validation_file": None, "hyperparameters": {},
                        "organization_id": "org", "result_files": [], "seed": 1, "error": None}

            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                if self.path.endswith("/files"):
                    outer.uploads.append(body)
                    self._send({"id": f"file-{len(outer.uploads)}", "object": "file", "bytes": len(body),
                                "created_at": 1, "filename": "train.jsonl", "purpose": "fine-tune",
                                "status": "processed"})
                else:
                    outer.created.append(json.loads(body))
                    self._send(self._job("queued"))

            def do_GET(self) -> None:  # noqa: N802
                outer.polls += 1
                self._send(self._job("running" if outer.polls < 2 else "succeeded"))

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def test_the_cloud_path_uploads_creates_and_polls_through_the_sdk(clean_env, tmp_path) -> None:
    stand_in = FineTuningStandIn()
    clean_env.setenv("LABKIT_CHAT_BACKEND", "openai")
    clean_env.setenv("OPENAI_API_KEY", "sk-test-0000")
    clean_env.setenv("OPENAI_BASE_URL", stand_in.base_url)
    train = tmp_path / "train.jsonl"
    train.write_text('{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}\n')
    try:
        job = cloud.submit(train, model="gpt-4.1-mini", epochs=2)
        seen: list[str] = []
        done = cloud.wait(job.id, poll_s=0, on_update=lambda j: seen.append(j.status))
    finally:
        stand_in.server.shutdown()
    assert job.status == "queued" and b'"assistant"' in stand_in.uploads[0]
    (created,) = stand_in.created
    assert created["model"] == "gpt-4.1-mini" and created["training_file"] == "file-1"
    assert created["hyperparameters"] == {"n_epochs": 2}
    assert seen == ["running", "succeeded"] and done.fine_tuned_model == "ft:gpt-4.1-mini:contoso"


def test_the_embedded_default_says_the_cloud_path_is_not_configured(clean_env, tmp_path) -> None:
    with pytest.raises(ConfigError, match="LABKIT_CHAT_BACKEND=openai or azure"):
        cloud.submit(tmp_path / "train.jsonl", model="gpt-4.1-mini")
    clean_env.setenv("LABKIT_CHAT_BACKEND", "openai")
    with pytest.raises(ConfigError, match="OPENAI_API_KEY"):
        cloud.submit(tmp_path / "train.jsonl", model="gpt-4.1-mini")
