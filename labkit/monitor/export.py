"""Span export beyond the local trace store: OTLP/HTTP to any collector, and Azure Monitor (cloud-only).

Introduced in notebooks/08_monitor.ipynb.

`configure_exporters` adds exporters to a tracer provider from the environment; labkit.tracing calls it
once, right after the SQLite exporter, so spans keep going to LABKIT_HOME/traces.sqlite as well.

- OTLP/HTTP: when `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or `OTEL_EXPORTER_OTLP_ENDPOINT` is set. The
  exporter reads the standard OTEL_EXPORTER_OTLP_* variables itself (headers, timeout, compression).
  Rule: an endpoint must be https://, or http:// to 127.0.0.1, localhost or ::1 (a local collector);
  plain http to any other host would send traces unencrypted and is refused with a ValueError.
- Azure Monitor (cloud-only): when `APPLICATIONINSIGHTS_CONNECTION_STRING` is set, the Application
  Insights trace exporter of azure-monitor-opentelemetry-exporter (the one the Azure Monitor
  OpenTelemetry distro uses) is added to this provider. The distro's `configure_azure_monitor()` is not
  used: it installs a global provider of its own, and labkit already has one. The package is not in
  base.txt: `pip install -r requirements/monitor-azure.txt`.

Nothing here logs or raises with a header, a key or the connection string: only variable names.
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from collections.abc import Callable
from urllib.parse import urlsplit

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter

OTLP_ENDPOINT_VARS = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
AZURE_CONNECTION_VAR = "APPLICATIONINSIGHTS_CONNECTION_STRING"
AZURE_REQUIREMENTS = "requirements/monitor-azure.txt"
LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})

log = logging.getLogger(__name__)

# the processors this module added, per provider (a provider that is garbage-collected drops out)
_added: weakref.WeakKeyDictionary[TracerProvider, dict[str, BatchSpanProcessor]] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def _env(name: str) -> str:
    return os.environ.get(name, "").strip()


def check_otlp_endpoint(var: str, url: str) -> None:
    """Refuse an endpoint that would carry traces unencrypted off this machine (the message names `var`,
    never the value, which may carry credentials)."""
    try:
        parts = urlsplit(url)
        scheme, host = parts.scheme.lower(), (parts.hostname or "").lower()
    except ValueError:
        raise ValueError(f"{var} is not a valid URL") from None
    if scheme == "https" and host:
        return
    if scheme == "http" and host in LOCAL_HOSTS:
        return
    raise ValueError(f"{var} must be an https:// URL, or http:// to 127.0.0.1, localhost or ::1 "
                     "(plain http to another host would send traces unencrypted)")


def _otlp_exporter() -> SpanExporter:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()  # endpoint, headers, timeout and compression from OTEL_EXPORTER_OTLP_*


def _azure_exporter_class() -> Callable[[], SpanExporter]:
    try:
        from azure.monitor.opentelemetry.exporter import AzureMonitorTraceExporter
    except ImportError:
        raise ImportError(f"{AZURE_CONNECTION_VAR} is set but azure-monitor-opentelemetry-exporter is not "
                          f"installed: pip install -r {AZURE_REQUIREMENTS}") from None
    return AzureMonitorTraceExporter  # reads the connection string from the environment itself


def configure_exporters(provider: TracerProvider) -> list[str]:
    """Add the exporters the environment asks for to `provider`, each behind a BatchSpanProcessor.

    Returns the names of the exporters this module has on `provider` ("otlp", "azure-monitor"), [] when
    none is configured. Idempotent: a second call adds only what the environment newly asks for.
    Raises ValueError for a refused OTLP endpoint and ImportError when Azure Monitor is asked for but its
    package is missing; in both cases nothing is added."""
    wanted: dict[str, Callable[[], SpanExporter]] = {}
    for var in OTLP_ENDPOINT_VARS:
        if url := _env(var):
            check_otlp_endpoint(var, url)
    if any(_env(var) for var in OTLP_ENDPOINT_VARS):
        wanted["otlp"] = _otlp_exporter
    if _env(AZURE_CONNECTION_VAR):
        wanted["azure-monitor"] = _azure_exporter_class()
    with _lock:
        added = _added.setdefault(provider, {})
        for name, make in wanted.items():
            if name not in added:
                processor = BatchSpanProcessor(make())
                provider.add_span_processor(processor)
                added[name] = processor
                log.info("spans are also exported to %s", name)
        return list(added)
