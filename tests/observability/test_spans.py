"""Optional OpenTelemetry export: the gateway's span reaches an OTLP/HTTP collector with the
ids the upstream saw."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator

import httpx
import pytest
from aiohttp import web

from gateway.config import ConfigError, TracingSettings
from gateway.spans import SpanExport
from tests.observability.conftest import gateway_config, upstream_headers
from tests.support.inproc import running_gateway
from tests.support.processes import free_port

CALLER = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_a_config_error_names_the_extra_when_the_sdk_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry.sdk.trace", None)  # import fails
    with pytest.raises(ConfigError, match=r"tracing.otlp_endpoint.*pygateway\[otel\]"):
        SpanExport(TracingSettings(otlp_endpoint="http://127.0.0.1:4318/v1/traces"), "r1")


def test_endpoint_must_be_an_http_url() -> None:
    with pytest.raises(ValueError, match="http"):
        TracingSettings(otlp_endpoint="collector:4318")


@contextlib.asynccontextmanager
async def collector() -> AsyncIterator[tuple[str, list[bytes]]]:
    bodies: list[bytes] = []

    async def traces(request: web.Request) -> web.Response:
        bodies.append(await request.read())
        return web.Response(body=b"", content_type="application/x-protobuf")

    app = web.Application()
    app.router.add_post("/v1/traces", traces)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}/v1/traces", bodies
    finally:
        await runner.cleanup()


async def test_spans_are_exported_with_the_propagated_ids(users_url: str) -> None:
    pytest.importorskip("opentelemetry.sdk.trace")
    pytest.importorskip("opentelemetry.exporter.otlp.proto.http.trace_exporter")
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    async with collector() as (endpoint, bodies):
        config = gateway_config(users_url, tracing={"otlp_endpoint": endpoint, "service_name": "edge"})
        async with running_gateway(config) as app:
            async with httpx.AsyncClient(base_url=app.url) as client:
                resp = await client.get("/api/users/_mock/echo", headers={"traceparent": CALLER})
            sent = upstream_headers(resp)["traceparent"][0].split("-")
        # Leaving the gateway flushes the batch processor.
        for _ in range(100):
            if bodies:
                break
            await asyncio.sleep(0.05)
    assert bodies, "no export reached the collector"
    spans = []
    for body in bodies:
        request = ExportTraceServiceRequest.FromString(body)
        for rs in request.resource_spans:
            attrs = {a.key: a.value.string_value for a in rs.resource.attributes}
            assert attrs["service.name"] == "edge"
            for ss in rs.scope_spans:
                spans.extend(ss.spans)
    (span,) = spans
    assert span.trace_id.hex() == "4bf92f3577b34da6a3ce929d0e0e4736" == sent[1]
    assert span.span_id.hex() == sent[2]  # upstream's parent is this span
    assert span.parent_span_id.hex() == "00f067aa0ba902b7"  # the caller's span
    assert span.name == "GET /api/users"
    assert span.end_time_unix_nano > span.start_time_unix_nano
