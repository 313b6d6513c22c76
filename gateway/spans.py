"""Optional OpenTelemetry export of the gateway's spans (`tracing.otlp_endpoint`, the `otel` extra).

Propagation (gateway/tracing.py) needs nothing; this module only ships each proxied request's
span to an OTLP/HTTP collector through the SDK's BatchSpanProcessor, which exports from its own
thread. The span carries the very ids the upstream saw in `traceparent`, so the upstream's spans
hang under the gateway's. The SDK is imported only when export is configured.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from gateway.config import ConfigError, TracingSettings
from gateway.tracing import TraceContext

if TYPE_CHECKING:
    from gateway.context import RequestContext

INSTALL_HINT = "pip install 'pygateway[otel]'"


class SpanExport:
    """Turns finished requests into OpenTelemetry SERVER spans with the propagated ids."""

    def __init__(self, settings: TracingSettings, replica_id: str) -> None:
        try:
            from opentelemetry import trace as trace_api
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor
            from opentelemetry.sdk.trace.id_generator import IdGenerator
        except ImportError:
            raise ConfigError(
                f"tracing.otlp_endpoint is set but the OpenTelemetry SDK is not installed ({INSTALL_HINT})"
            ) from None

        class PresetIds(IdGenerator):
            """Hands the SDK the ids the gateway already propagated upstream."""

            trace_id = 0
            span_id = 0

            def generate_trace_id(self) -> int:
                return self.trace_id

            def generate_span_id(self) -> int:
                return self.span_id

        self._api = trace_api
        self._ids = PresetIds()
        resource = Resource.create({"service.name": settings.service_name,
                                    "service.instance.id": replica_id})
        self.provider = TracerProvider(resource=resource, id_generator=self._ids)
        self.processor = BatchSpanProcessor(OTLPSpanExporter(endpoint=settings.otlp_endpoint,
                                                             timeout=settings.export_timeout))
        self.provider.add_span_processor(self.processor)
        self.tracer = self.provider.get_tracer("pygateway")

    def record(self, ctx: RequestContext, trace: TraceContext, status: int, elapsed: float) -> None:
        """Record one finished request (called after the response went out)."""
        api = self._api
        end = time.time_ns()
        parent: Any = None
        if trace.parent_id is not None:
            remote = api.SpanContext(int(trace.trace_id, 16), int(trace.parent_id, 16), is_remote=True,
                                     trace_flags=api.TraceFlags(api.TraceFlags.SAMPLED))
            parent = api.set_span_in_context(api.NonRecordingSpan(remote))
        self._ids.trace_id = int(trace.trace_id, 16)
        self._ids.span_id = int(trace.span_id, 16)
        attributes: dict[str, Any] = {
            "http.request.method": ctx.method,
            "url.path": ctx.path,
            "http.route": ctx.route.prefix,
            "http.response.status_code": status,
            "gateway.service": ctx.route.service,
            "gateway.request_id": ctx.request_id,
        }
        if ctx.consumer is not None:
            attributes["gateway.consumer"] = ctx.consumer.id
        if ctx.cache_status:
            attributes["gateway.cache"] = ctx.cache_status
        if ctx.upstream is not None:
            attributes["gateway.upstream_ms"] = round(ctx.upstream.duration * 1000, 3)
            if ctx.upstream.failure:
                attributes["gateway.upstream_failure"] = ctx.upstream.failure.value
        span = self.tracer.start_span(
            f"{ctx.method} {ctx.route.prefix}", context=parent, kind=api.SpanKind.SERVER,
            attributes=attributes, start_time=end - int(elapsed * 1e9),
        )
        if status >= 500:
            span.set_status(api.Status(api.StatusCode.ERROR))
        span.end(end_time=end)

    def close(self) -> None:
        """Flush what is queued (bounded by the exporter's timeout) and stop the thread."""
        self.provider.shutdown()


def span_export(settings: TracingSettings, replica_id: str) -> SpanExport | None:
    return SpanExport(settings, replica_id) if settings.otlp_endpoint else None
