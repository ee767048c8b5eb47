"""The Azure AI Content Safety backend of the guards (introduced in notebooks/06_content_safety.ipynb).

Active with `LABKIT_SAFETY_BACKEND=azure` and `AZURE_CONTENT_SAFETY_ENDPOINT` (a key in
`AZURE_CONTENT_SAFETY_KEY`, or Entra ID through azure-identity). Text analysis goes through the
`azure-ai-contentsafety` SDK (categories Hate, Sexual, Violence, SelfHarm with severities 0-7;
blocked at `THRESHOLDS["azure_severity"]`, 4 = medium, Azure OpenAI's default filter level);
Prompt Shields (`text:shieldPrompt`: direct attacks in the user prompt, indirect attacks in
documents) through the same client's `send_request`, since the SDK has no method for it. The rules
for customers' data, the canary and citations stay the offline ones: they know this shop.
"""

from __future__ import annotations

import functools
from typing import Any

from labkit.config import ConfigError, Settings, get_settings

SHIELD_API_VERSION = "2024-09-01"
MAX_CHARS = 10000  # the service's text limit per input; the guards' texts are far shorter
CATEGORIES = ("Hate", "Sexual", "Violence", "SelfHarm")


def check_configured(settings: Settings) -> None:
    if not settings.azure_content_safety_endpoint:
        raise ConfigError("missing configuration: set AZURE_CONTENT_SAFETY_ENDPOINT "
                          "(LABKIT_SAFETY_BACKEND=azure)", missing=["AZURE_CONTENT_SAFETY_ENDPOINT"])


@functools.cache
def _client(endpoint: str, key: str | None) -> Any:
    from azure.ai.contentsafety import ContentSafetyClient
    from azure.core.credentials import AzureKeyCredential

    if key:
        credential: Any = AzureKeyCredential(key)
    else:
        from azure.identity import DefaultAzureCredential

        credential = DefaultAzureCredential()
    return ContentSafetyClient(endpoint, credential, retry_total=2)


def client(settings: Settings | None = None) -> Any:
    settings = settings or get_settings()
    check_configured(settings)
    key = settings.azure_content_safety_key.get_secret_value() if settings.azure_content_safety_key else None
    return _client(settings.azure_content_safety_endpoint, key)


def analyze(text: str, settings: Settings | None = None) -> dict[str, int]:
    """Severity per harm category (0-7) of one text."""
    from azure.ai.contentsafety.models import AnalyzeTextOptions

    options = AnalyzeTextOptions(text=text[:MAX_CHARS], categories=list(CATEGORIES))
    result = client(settings).analyze_text(options)
    return {str(c.category): int(c.severity or 0) for c in result.categories_analysis}


def shield(user_prompt: str, documents: list[str],
           settings: Settings | None = None) -> tuple[bool, list[bool]]:
    """Prompt Shields: (attack in the user prompt, attack in each document)."""
    from azure.core.rest import HttpRequest

    # the client joins a relative URL to "{endpoint}/contentsafety"
    request = HttpRequest("POST", f"/text:shieldPrompt?api-version={SHIELD_API_VERSION}",
                          json={"userPrompt": user_prompt[:MAX_CHARS],
                                "documents": [d[:MAX_CHARS] for d in documents]})
    response = client(settings).send_request(request)
    response.raise_for_status()
    body = response.json()
    docs = [bool(d.get("attackDetected")) for d in body.get("documentsAnalysis") or []]
    return bool((body.get("userPromptAnalysis") or {}).get("attackDetected")), docs
