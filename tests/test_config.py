"""Configuration: backend choice, the missing-variables message, and secrets never printed."""

from __future__ import annotations

import subprocess
import sys

import pytest

from labkit.config import ConfigError, Settings, get_settings


def test_default_is_local(clean_env: pytest.MonkeyPatch) -> None:
    settings = Settings()
    assert settings.backends() == {"chat": "local", "embed": "local", "search": "local", "store": "local"}
    settings.check()  # nothing required


def test_azure_without_variables_names_every_missing_one(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("LABKIT_BACKEND", "azure")
    with pytest.raises(ConfigError) as info:
        Settings().check()
    message = str(info.value)
    for name in ("AZURE_OPENAI_ENDPOINT", "AZURE_OPENAI_CHAT_DEPLOYMENT", "AZURE_OPENAI_EMBEDDING_DEPLOYMENT",
                 "AZURE_SEARCH_ENDPOINT", "AZURE_COSMOS_ENDPOINT"):
        assert name in message
    assert message.count("AZURE_OPENAI_ENDPOINT") == 1
    assert "\n" not in message
    assert info.value.missing[0] == "AZURE_OPENAI_ENDPOINT"


def test_per_service_overrides_mix_backends(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("LABKIT_BACKEND", "openai")
    clean_env.setenv("LABKIT_EMBED_BACKEND", "local")
    settings = Settings()
    assert settings.backends() == {"chat": "openai", "embed": "local", "search": "local", "store": "local"}
    assert "no search service" in settings.backend_reason("search")[1]
    with pytest.raises(ConfigError, match="OPENAI_API_KEY"):
        settings.check()


def test_secret_values_never_in_messages_or_reprs(clean_env: pytest.MonkeyPatch) -> None:
    canary = "canary-secret-8c1f5e2a9d"
    clean_env.setenv("LABKIT_BACKEND", "azure")
    clean_env.setenv("AZURE_OPENAI_API_KEY", canary)
    clean_env.setenv("AZURE_SEARCH_API_KEY", canary)
    settings = Settings()
    with pytest.raises(ConfigError) as info:
        settings.check()
    assert canary not in str(info.value)
    assert canary not in repr(settings) and canary not in str(settings.model_dump())
    assert settings.azure_openai_api_key is not None
    assert settings.azure_openai_api_key.get_secret_value() == canary


def test_dotenv_file_is_read(clean_env: pytest.MonkeyPatch, tmp_path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("LABKIT_BACKEND=openai\nOPENAI_API_KEY=from-dotenv\n")
    settings = Settings(_env_file=env_file)  # type: ignore[call-arg]
    assert settings.backend_for("chat") == "openai"
    settings.check()


def test_setup_stops_with_one_line(clean_env: pytest.MonkeyPatch) -> None:
    """`labkit setup` with LABKIT_BACKEND=azure and no Azure variables: one line, exit 2."""
    clean_env.setenv("LABKIT_BACKEND", "azure")
    clean_env.setenv("LABKIT_ENV_FILE", "none")
    proc = subprocess.run([sys.executable, "-m", "labkit.cli", "setup", "--no-services"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "AZURE_OPENAI_ENDPOINT" in lines[0], proc.stderr
    assert proc.stdout == ""


def test_invalid_values_are_a_config_error_without_the_value(clean_env: pytest.MonkeyPatch) -> None:
    from labkit.config import get_settings

    clean_env.setenv("LABKIT_BACKEND", "Azure-secret-ish")
    with pytest.raises(ConfigError, match="LABKIT_BACKEND") as info:
        get_settings()
    assert "Azure-secret-ish" not in str(info.value)
    clean_env.setenv("LABKIT_BACKEND", "local")
    clean_env.setenv("LABKIT_SEARCH_BACKEND", "openai")
    with pytest.raises(ConfigError, match="OpenAI has no search service"):
        get_settings().backend_for("search")


def test_settings_are_read_once_and_follow_variables_and_the_env_file(clean_env: pytest.MonkeyPatch,
                                                                      tmp_path) -> None:
    import os

    assert get_settings() is get_settings()  # cached: nothing changed
    clean_env.setenv("LABKIT_MODEL_PORT", "9123")
    assert get_settings().labkit_model_port == 9123  # a changed variable is seen at once
    env_file = tmp_path / ".env"
    env_file.write_text("LABKIT_SEARCH_PORT=9200\n")
    clean_env.setattr(Settings, "model_config", {**Settings.model_config, "env_file": str(env_file)})
    assert get_settings().labkit_search_port == 9200
    env_file.write_text("LABKIT_SEARCH_PORT=9201\n")
    stat = env_file.stat()
    os.utime(env_file, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # a later edit of .env
    assert get_settings().labkit_search_port == 9201
    assert get_settings(labkit_search_port=9300).labkit_search_port == 9300  # overrides are never cached
    assert get_settings().labkit_search_port == 9201
