"""labkit.monitor.export: spans to an OTLP/HTTP collector (a receiver on 127.0.0.1 here), the refusal
of plain http to a remote host, idempotence, and the Azure Monitor exporter (built, never sent)."""

from __future__ import annotations

import gzip
import json
import os
import queue
import re
import subprocess
import sys
import tempfile
import threading
import zlib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.trace import TracerProvider

from labkit.config import REPO_ROOT
from labkit.monitor import export
from labkit.monitor.export import configure_exporters

HANG = 120  # seconds: only ends a hang, never paces the test
ENV = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_HEADERS",
       "OTEL_EXPORTER_OTLP_TRACES_HEADERS", "OTEL_EXPORTER_OTLP_COMPRESSION",
       "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "APPLICATIONINSIGHTS_CONNECTION_STRING")


def _value(any_value: Any) -> Any:
    return getattr(any_value, any_value.WhichOneof("value"))


class Receiver:
    """An OTLP/HTTP trace receiver on 127.0.0.1: every span it gets goes on `spans` as a dict."""

    def __init__(self) -> None:
        self.spans: queue.Queue[dict[str, Any]] = queue.Queue()
        spans = self.spans

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                encoding = self.headers.get("Content-Encoding", "")
                if encoding == "gzip":
                    body = gzip.decompress(body)
                elif encoding == "deflate":
                    body = zlib.decompress(body)
                if self.path != "/v1/traces":
                    self.send_error(404)
                    return
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                for resource_spans in request.resource_spans:
                    for scope_spans in resource_spans.scope_spans:
                        for span in scope_spans.spans:
                            spans.put({"name": span.name, "trace_id": span.trace_id.hex(), "span_id": span.span_id.hex(),
                                       "parent_id": span.parent_span_id.hex(),
                                       "attributes": {a.key: _value(a.value) for a in span.attributes}})
                reply = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def take(self, n: int) -> list[dict[str, Any]]:
        return [self.spans.get(timeout=HANG) for _ in range(n)]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=HANG)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    return monkeypatch


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def provider() -> Iterator[TracerProvider]:
    p = TracerProvider(shutdown_on_exit=False)
    yield p
    p.shutdown()


def _emit_chat_span(p: TracerProvider) -> None:
    tracer = p.get_tracer("test")
    with tracer.start_as_current_span("chat smollm2-135m-instruct") as span:
        span.set_attribute("gen_ai.operation.name", "chat")
        span.set_attribute("gen_ai.usage.input_tokens", 12)
        with tracer.start_as_current_span("retrieval products-section") as child:
            child.set_attribute("gen_ai.operation.name", "retrieval")


def test_spans_reach_an_otlp_collector(clean_env: pytest.MonkeyPatch, receiver: Receiver,
                                       provider: TracerProvider) -> None:
    clean_env.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.url)
    assert configure_exporters(provider) == ["otlp"]
    _emit_chat_span(provider)
    assert provider.force_flush(timeout_millis=HANG * 1000)
    spans = {s["name"]: s for s in receiver.take(2)}
    chat, child = spans["chat smollm2-135m-instruct"], spans["retrieval products-section"]
    assert chat["attributes"] == {"gen_ai.operation.name": "chat", "gen_ai.usage.input_tokens": 12}
    assert child["attributes"] == {"gen_ai.operation.name": "retrieval"}
    assert child["parent_id"] == chat["span_id"] and chat["parent_id"] == ""


def test_the_traces_endpoint_variable_alone_is_enough(clean_env: pytest.MonkeyPatch, receiver: Receiver,
                                                      provider: TracerProvider) -> None:
    clean_env.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", receiver.url + "/v1/traces")
    assert configure_exporters(provider) == ["otlp"]
    _emit_chat_span(provider)
    assert provider.force_flush(timeout_millis=HANG * 1000)
    assert {s["name"] for s in receiver.take(2)} == {"chat smollm2-135m-instruct", "retrieval products-section"}


def test_nothing_configured_adds_nothing(clean_env: pytest.MonkeyPatch, provider: TracerProvider) -> None:
    assert configure_exporters(provider) == []
    assert provider._active_span_processor._span_processors == ()


def test_a_second_call_adds_nothing(clean_env: pytest.MonkeyPatch, provider: TracerProvider) -> None:
    clean_env.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")  # never sent to: no span is made
    assert configure_exporters(provider) == ["otlp"]
    assert configure_exporters(provider) == ["otlp"]
    assert len(provider._active_span_processor._span_processors) == 1
    other = TracerProvider(shutdown_on_exit=False)  # per provider: another one gets its own
    try:
        assert configure_exporters(other) == ["otlp"]
    finally:
        other.shutdown()


@pytest.mark.parametrize("url", ["http://collector.example.com:4318", "http://10.0.0.5:4318", "localhost:4318",
                                 "ftp://127.0.0.1/", "https:///v1/traces"])
def test_unencrypted_or_odd_endpoints_are_refused(clean_env: pytest.MonkeyPatch, provider: TracerProvider,
                                                  url: str) -> None:
    for var in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        with clean_env.context() as env:
            env.setenv(var, url)
            with pytest.raises(ValueError, match=var) as refused:
                configure_exporters(provider)
            assert url not in str(refused.value)  # the name of the variable, never its value
    assert provider._active_span_processor._span_processors == ()


@pytest.mark.parametrize("url", ["https://collector.example.com:4318", "http://localhost:4318",
                                 "http://[::1]:4318/", "HTTP://127.0.0.1:4318"])
def test_https_anywhere_and_http_to_this_machine_are_accepted(url: str) -> None:
    export.check_otlp_endpoint("OTEL_EXPORTER_OTLP_ENDPOINT", url)


FAKE_CONNECTION = "InstrumentationKey=00000000-0000-0000-0000-000000000000;IngestionEndpoint=https://127.0.0.1:9/"


def test_azure_monitor_exporter_is_added(clean_env: pytest.MonkeyPatch, provider: TracerProvider,
                                         tmp_path: Path) -> None:
    exporter_module = pytest.importorskip("azure.monitor.opentelemetry.exporter",
                                          reason="azure-monitor-opentelemetry-exporter is cloud-only")
    clean_env.setenv("APPLICATIONINSIGHTS_CONNECTION_STRING", FAKE_CONNECTION)
    # no statsbeat, control plane or usage stats: those would reach out to Azure on their own
    for name in ("APPLICATIONINSIGHTS_STATSBEAT_DISABLED_ALL", "APPLICATIONINSIGHTS_CONTROLPLANE_DISABLED",
                 "APPLICATIONINSIGHTS_SDKSTATS_DISABLED"):
        clean_env.setenv(name, "true")
    clean_env.setattr(tempfile, "tempdir", str(tmp_path))  # its offline-retry folder
    assert configure_exporters(provider) == ["azure-monitor"]
    assert configure_exporters(provider) == ["azure-monitor"]
    (processor,) = provider._active_span_processor._span_processors
    assert isinstance(processor.span_exporter, exporter_module.AzureMonitorTraceExporter)


def test_azure_monitor_without_its_package_names_the_requirements_file(
        clean_env: pytest.MonkeyPatch, provider: TracerProvider) -> None:
    clean_env.setenv("APPLICATIONINSIGHTS_CONNECTION_STRING", FAKE_CONNECTION)
    clean_env.setitem(sys.modules, "azure.monitor.opentelemetry.exporter", None)  # as if not installed
    with pytest.raises(ImportError, match=re.escape("pip install -r requirements/monitor-azure.txt")) as missing:
        configure_exporters(provider)
    assert "InstrumentationKey" not in str(missing.value)
    assert provider._active_span_processor._span_processors == ()


def test_the_azure_requirements_file_pins_the_exporter_with_a_reason() -> None:
    """A prerelease-only package (test_pins' pattern takes no prerelease), so checked here."""
    lines = [line for line in (REPO_ROOT / export.AZURE_REQUIREMENTS).read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    assert len(lines) == 1 and re.match(r"^azure-monitor-opentelemetry-exporter==\d+\.\d+\.\d+b\d+\s+#\s*\S", lines[0])


def test_the_labkit_provider_exports_to_sqlite_and_otlp(clean_env: pytest.MonkeyPatch, receiver: Receiver,
                                                        tmp_path: Path) -> None:
    """labkit.tracing's provider: spans still go to the trace store, and also to the collector."""
    code = ("from labkit import tracing\n"
            "with tracing.get_tracer().start_as_current_span('chat smollm2-135m-instruct') as s:\n"
            "    s.set_attribute('gen_ai.operation.name', 'chat')\n"
            "    request_id = tracing.current_trace_id()\n"
            f"assert tracing.tracer_provider().force_flush(timeout_millis={HANG * 1000})\n"
            "print(request_id)\n"
            "print(json.dumps([s['name'] for s in tracing.get_trace(request_id)]))\n")
    env = dict(os.environ, LABKIT_HOME=str(tmp_path), OTEL_EXPORTER_OTLP_ENDPOINT=receiver.url)
    result = subprocess.run([sys.executable, "-c", "import json\n" + code], cwd=REPO_ROOT, env=env,
                            capture_output=True, text=True, timeout=HANG * 3)
    assert result.returncode == 0, result.stderr
    request_id, stored = result.stdout.splitlines()
    assert json.loads(stored) == ["chat smollm2-135m-instruct"]
    (span,) = receiver.take(1)
    assert span["trace_id"] == request_id
    assert span["name"] == "chat smollm2-135m-instruct" and span["attributes"]["gen_ai.operation.name"] == "chat"
