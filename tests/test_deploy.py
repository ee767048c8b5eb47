"""The container image, checked as far as can be without a container engine: hadolint on the
Dockerfile, its two targets' promises (non-root, port 8000, HEALTHCHECK, no llama.cpp or torch in
`cloud`), requirements/cloud.txt against the pins, and the service importing without the libraries
the cloud image leaves out. The image build itself is verified only where Docker exists
(docs/deploy.md)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from labkit.config import REPO_ROOT

DOCKERFILE = (REPO_ROOT / "Dockerfile").read_text()


def _stage(name: str) -> str:
    parts = re.split(r"^FROM ", DOCKERFILE, flags=re.M)
    (stage,) = [p for p in parts if re.match(rf"\S+ AS {name}\s*$", p.splitlines()[0])]
    return stage


def test_hadolint_passes() -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    result = subprocess.run([str(hadolint), "--no-color", "Dockerfile"], cwd=REPO_ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_both_targets_run_as_a_user_on_8000_with_a_healthcheck() -> None:
    for target in ("local", "cloud"):
        stage = _stage(target)
        assert re.search(r"^USER 10001:10001$", stage, re.M), target
        assert "EXPOSE 8000" in stage and "HEALTHCHECK" in stage and "/health" in stage, target
        assert '"labkit", "serve", "--host", "0.0.0.0", "--port", "8000"' in stage, target


def test_the_cloud_image_has_no_llama_or_torch_and_its_pins_are_the_base_pins() -> None:
    chain = _stage("cloud") + _stage("cloud-deps")
    assert "llama" not in chain and "torch" not in chain and "requirements/cloud.txt" in chain
    assert "monitor-azure.txt" in chain  # Azure Monitor export works in the cloud image (notebook 08)
    base = {line.split("#")[0].strip() for line in (REPO_ROOT / "requirements/base.txt").read_text().splitlines()}
    cloud = [line.split("#")[0].strip() for line in (REPO_ROOT / "requirements/cloud.txt").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    assert cloud and all(spec in base for spec in cloud), "cloud.txt must repeat base.txt's pins exactly"
    assert not [s for s in cloud if re.match(r"(torch|transformers|peft|sentence-transformers|llama)", s)]
    local = _stage("local-deps") + _stage("llama-build")
    assert "torch==2.13.0" in local and "download.pytorch.org/whl/cpu" in local and "GGML_NATIVE=OFF" in local


def test_the_service_imports_without_what_the_cloud_image_leaves_out() -> None:
    code = ("import sys\n"
            "for name in ('torch', 'transformers', 'sentence_transformers', 'llama_cpp', 'sklearn', 'peft'):\n"
            "    sys.modules[name] = None\n"
            "import labkit.cli, labkit.app.main, labkit.safety.azure\n"
            "from labkit.app.main import create_app\n"
            "print('ok')\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]


def test_the_build_context_leaves_out_state_and_secrets() -> None:
    ignored = (REPO_ROOT / ".dockerignore").read_text().splitlines()
    for entry in (".git", ".venv", ".labkit", ".env", "build"):
        assert entry in ignored
