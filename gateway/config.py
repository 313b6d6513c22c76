"""Configuration: the YAML file, environment overrides, and validation with named fields.

The seed's configuration is accepted verbatim; richer forms extend it (a route given as a
mapping, a rate-limit tier given as windows, per-service breaker settings). Unknown keys are
errors, so a typo never silently turns a policy off.

Each policy's schema lives beside its code and is composed here: `gateway/ratelimit/settings.py`
(`rate_limit`, `rate_limits`, a route's `rate_limit`), `gateway/breaker/settings.py`
(`circuit_breaker`), `gateway/cache/settings.py` (`cache`, a route's `cache`) and
`gateway/identity/settings.py` (`auth`); the base `Section` and shared checks are in
`gateway/settings.py`. This module keeps the sections no one policy owns.

Load order: defaults < file (`--config`, `$GATEWAY_CONFIG`, `./gateway.yaml`) < environment
(`GATEWAY_SECTION__KEY=value`, values parsed as YAML scalars, e.g. `GATEWAY_REDIS__URL`).
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from gateway.breaker.settings import BreakerSettings as BreakerSettings
from gateway.breaker.settings import ErrorRatioSettings as ErrorRatioSettings
from gateway.cache.settings import CacheSettings as CacheSettings
from gateway.cache.settings import RouteCache as RouteCache
from gateway.identity.settings import AuthSettings as AuthSettings
from gateway.identity.settings import ConsumerSettings as ConsumerSettings
from gateway.identity.settings import RouteAuth
from gateway.ratelimit.settings import Algorithm as Algorithm
from gateway.ratelimit.settings import RateLimitSettings as RateLimitSettings
from gateway.ratelimit.settings import RateWindow as RateWindow
from gateway.ratelimit.settings import RouteRateLimit as RouteRateLimit
from gateway.ratelimit.settings import TierSettings as TierSettings
from gateway.ratelimit.settings import default_tiers, tier_short_form
from gateway.settings import HTTP_METHODS as HTTP_METHODS
from gateway.settings import Section as Section
from gateway.settings import check_http_url, http_methods
from gateway.settings import host_port as host_port
from gateway.tls import TlsSettings

ENV_PREFIX = "GATEWAY_"
DEFAULT_CONFIG_FILE = "gateway.yaml"


class ConfigError(Exception):
    """The configuration is invalid; the message names the field and the problem."""


# -- services ----------------------------------------------------------------------------------
class ServiceSettings(Section):
    """An upstream service: one URL, or several `targets` balanced round-robin."""

    url: str | None = None
    targets: list[str] = Field(default_factory=list)
    timeout: float = Field(10, gt=0, description="seconds for the whole upstream exchange")
    connect_timeout: float = Field(2, gt=0)
    health_path: str = "/health"
    health_interval: float = Field(10, gt=0)
    ca_file: str | None = Field(None, description="PEM CA bundle to verify https:// upstreams with")
    # Bulkheads (Envoy's per-cluster circuit breakers): one service cannot starve another.
    max_connections: int | None = Field(None, ge=1, description="connections per target (default proxy.pool_size)")
    max_pending: int = Field(1024, ge=0, description="requests waiting for a connection per target; past it 503 at once")
    pending_timeout: float | None = Field(None, gt=0, description="seconds a request waits (default proxy.pool_timeout)")
    circuit_breaker: dict[str, Any] | None = None

    @field_validator("url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        return None if value is None else check_http_url(value)

    @field_validator("targets")
    @classmethod
    def _targets(cls, value: list[str]) -> list[str]:
        return [check_http_url(v) for v in value]

    @field_validator("ca_file")
    @classmethod
    def _ca_file(cls, value: str | None) -> str | None:
        if value is not None and not os.path.isfile(value):
            raise ValueError(f"no such file: {value!r}")
        return value

    @field_validator("health_path")
    @classmethod
    def _health_path(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError("must start with '/'")
        return value

    @model_validator(mode="after")
    def _one_of(self) -> ServiceSettings:
        if not self.url and not self.targets:
            raise ValueError("needs 'url' (or a list of 'targets')")
        if self.url and self.targets:
            raise ValueError("give either 'url' or 'targets', not both")
        if self.circuit_breaker is not None:
            BreakerSettings(**self.circuit_breaker)  # validate the override early
            if "sync_interval" in self.circuit_breaker:
                raise ValueError("circuit_breaker.sync_interval is process-wide: set it in the "
                                 "top-level circuit_breaker block, not per service")
        return self

    @property
    def upstreams(self) -> list[str]:
        return [self.url] if self.url else list(self.targets)


# -- routes ------------------------------------------------------------------------------------


class RouteSettings(Section):
    """A routed prefix. The seed's short form `/api/users: users` means `{service: users}`."""

    service: str
    strip_prefix: bool = False
    methods: list[str] | None = None
    cache: RouteCache = RouteCache()
    rate_limit: RouteRateLimit | None = None
    timeout: float | None = Field(None, gt=0)
    auth: RouteAuth | None = None

    @model_validator(mode="before")
    @classmethod
    def _cache_bool(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and isinstance(data.get("cache"), bool):
            data = {**data, "cache": {"enabled": data["cache"]}}
        return data

    @field_validator("methods")
    @classmethod
    def _methods(cls, value: list[str] | None) -> list[str] | None:
        return http_methods(value)


# -- store, proxy, logging ---------------------------------------------------------------------
class RedisSettings(Section):
    """Omit `url` to run on the embedded in-process store (single process only)."""

    url: str | None = None
    timeout: float = Field(0.25, gt=0, description="seconds any one store call may take")
    connect_timeout: float = Field(0.25, gt=0)
    probe_interval: float = Field(1.0, gt=0)
    key_prefix: str = "gw"

    @field_validator("url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        scheme = urlsplit(value).scheme
        if scheme not in ("redis", "rediss", "unix", "redis+cluster", "rediss+cluster", "redis+sentinel"):
            raise ValueError(
                "must be redis://, rediss://, unix://, redis+cluster:// or redis+sentinel://, "
                f"got {scheme + '://...' if scheme else 'no scheme'}"  # never echo a password
            )
        if scheme.endswith("+cluster") or scheme == "redis+sentinel":
            from gateway.redis_urls import parse_url

            parse_url(value)  # its ValueError names what is wrong with the node list or master
        return value


class ProxySettings(Section):
    """The data plane: what a client may send and how long it may take, the upstream pools."""

    trusted_proxies: list[str] = Field(default_factory=list)
    max_body_bytes: int = Field(128 * 1024 * 1024, ge=0, description="0 means unlimited")
    buffer_request_bytes: int = Field(
        64 * 1024, ge=0, description="request bodies up to this size are read whole before an upstream "
        "connection is taken (a stalled upload never holds one); larger ones stream (0: always stream)")
    max_header_bytes: int = Field(32 * 1024, ge=1024)
    max_url_bytes: int = Field(8192, ge=256, description="longest request target (414 beyond)")
    max_headers: int = Field(100, ge=8, description="most header fields in a request (431 beyond)")
    max_pipelined: int = Field(16, ge=1, description="queued pipelined requests per connection")
    max_connections: int = Field(10_000, ge=0, description="open client connections per process (0: no cap)")
    max_connections_per_client: int = Field(
        0, ge=0, description="open connections per client address (0: no cap; behind a load balancer "
        "every connection comes from its address: cap on the load balancer instead)")
    header_timeout: float = Field(10, gt=0, description="seconds to receive a request head (408)")
    idle_timeout: float = Field(60, gt=0, description="seconds a keep-alive connection may idle")
    body_timeout: float = Field(60, gt=0, description="longest gap while a request body arrives (408)")
    send_timeout: float = Field(60, gt=0, description="longest a client may leave a response unread")
    request_timeout: float = Field(
        900, ge=0, description="longest one request may take, from its head to its response's last byte: "
        "408/504 problem if nothing was sent yet, else the connection is cut (0: none)")
    pool_size: int = Field(256, ge=1, description="connections per upstream target, per process")
    pool_timeout: float = Field(5, gt=0, description="seconds to wait for a free upstream connection (503)")
    upstream_keepalive: float = Field(
        4, gt=0, description="seconds an idle upstream connection is kept (below the upstream's own "
        "keep-alive timeout: uvicorn, Node and Apache close theirs after 5 s)")
    underscores_in_headers: bool = Field(
        False, description="forward request fields whose names hold '_' (off: dropped, as nginx does)")

    @field_validator("trusted_proxies")
    @classmethod
    def _cidrs(cls, value: list[str]) -> list[str]:
        for item in value:
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError as exc:
                raise ValueError(f"{item!r} is not an IP address or CIDR network") from exc
        return value


class AdminSettings(Section):
    """The admin listener: the admin API, the dashboard, the docs and the full metrics on a port
    of their own (as Kong's, APISIX's and Envoy's), off the public one."""

    listen: str | None = Field(
        "127.0.0.1:9000",
        description="host:port of the admin listener (null: none, everything on the public port)")

    @field_validator("listen", mode="before")
    @classmethod
    def _listen(cls, value: Any) -> str | None:
        if value in (None, "", "off", False):  # YAML reads an unquoted `off` as false
            return None
        if not isinstance(value, str):
            raise ValueError("must be host:port, or null / off for none")
        host_port(value)
        return value


class ControlSettings(Section):
    """What the public port serves of the control plane while an admin listener runs: always
    `/`, `/health`, `/ready` and `/metrics` (per-consumer figures only with an admin key)."""

    # The seed promises /docs on the gateway's port: kept there by default.
    public: list[Literal["docs", "dashboard"]] = Field(
        default_factory=lambda: list[Literal["docs", "dashboard"]](["docs"]),
        description="also serve these on the public port")


class ReloadSettings(Section):
    """Reloading the file without a restart (gateway/reload.py): on SIGHUP, on `gateway reload`,
    and when the file changes (watched, as Traefik's file provider)."""

    watch: bool = Field(True, description="reload when the config file's content changes")
    interval: float = Field(1.0, gt=0, le=60, description="seconds between checks of the file")


class LoggingSettings(Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["json", "text"] = "json"
    access_log: bool = True

    @field_validator("level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value


class TracingSettings(Section):
    """W3C trace context propagation, and optional OpenTelemetry export (the `otel` extra)."""

    enabled: bool = Field(True, description="propagate traceparent/tracestate upstream")
    sample_ratio: float = Field(
        1.0, ge=0, le=1, description="share of traces the gateway starts that are marked sampled"
    )
    otlp_endpoint: str | None = Field(
        None, description="OTLP/HTTP traces URL, e.g. http://collector:4318/v1/traces"
    )
    service_name: str = Field("pygateway", min_length=1)
    export_timeout: float = Field(5, gt=0, description="seconds one export batch may take")

    @field_validator("otlp_endpoint")
    @classmethod
    def _endpoint(cls, value: str | None) -> str | None:
        return None if value in (None, "") else check_http_url(value)  # type: ignore[arg-type]


class PluginSettings(Section):
    """One plugin in the chain (gateway/plugins/, docs/plugins.md)."""

    use: str = Field(description="a built-in name, an entry-point name or 'module:Class'")
    config: dict[str, Any] = Field(default_factory=dict, description="validated by the plugin's Settings")
    routes: list[str] | None = Field(None, description="route prefixes it applies to (default: all)")
    at: Literal["first", "after_identity", "before_upstream"] | None = Field(
        None, description="first: before identity; after_identity (default); before_upstream: "
                          "after the breaker, next to the upstream call")

    @model_validator(mode="after")
    def _loads(self) -> PluginSettings:
        # Import the class and validate `config` now, so a bad plugin is a config error that
        # names the field (at start-up and in `gateway check-config`), never a failed request.
        from gateway.plugins.loading import validate_settings

        validate_settings(self.use, self.config)
        return self

    @property
    def place(self) -> str:
        from gateway.plugins.loading import plugin_class

        return self.at or str(getattr(plugin_class(self.use), "default_at", "after_identity"))


# -- the whole file ----------------------------------------------------------------------------
class GatewayConfig(Section):
    services: dict[str, ServiceSettings]
    routes: dict[str, RouteSettings]
    rate_limits: dict[str, TierSettings] = Field(default_factory=default_tiers)
    rate_limit: RateLimitSettings = RateLimitSettings()
    circuit_breaker: BreakerSettings = BreakerSettings()
    cache: CacheSettings = CacheSettings()
    auth: AuthSettings = AuthSettings()
    redis: RedisSettings = RedisSettings()
    proxy: ProxySettings = ProxySettings()
    logging: LoggingSettings = LoggingSettings()
    tracing: TracingSettings = TracingSettings()
    admin: AdminSettings = AdminSettings()
    control: ControlSettings = ControlSettings()
    reload: ReloadSettings = ReloadSettings()
    tls: TlsSettings | None = Field(None, description="HTTPS on the public port (gateway/tls.py)")
    plugins: list[PluginSettings] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _short_forms(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            return data
        data = dict(data)
        routes = data.get("routes")
        if isinstance(routes, Mapping):
            data["routes"] = {
                prefix: {"service": spec} if isinstance(spec, str) else spec
                for prefix, spec in routes.items()
            }
        tiers = data.get("rate_limits")
        if isinstance(tiers, Mapping):
            data["rate_limits"] = {name: tier_short_form(spec) for name, spec in tiers.items()}
        return data

    @field_validator("routes")
    @classmethod
    def _prefixes(cls, value: dict[str, RouteSettings]) -> dict[str, RouteSettings]:
        for prefix in value:
            if not prefix.startswith("/") or prefix != "/" and prefix.endswith("/"):
                raise ValueError(f"route {prefix!r} must start with '/' and not end with '/'")
            if re.search(r"(^|/)\.\.?(/|$)|%|\\|//", prefix):
                raise ValueError(f"route {prefix!r} must be a plain path (no dot-segments, %, \\ or //)")
        return value

    @model_validator(mode="after")
    def _references(self) -> GatewayConfig:
        for i, plugin in enumerate(self.plugins):
            for prefix in plugin.routes or ():
                if prefix not in self.routes:
                    raise ValueError(f"plugins.{i}.routes: {prefix!r} is not a configured route "
                                     f"(known: {', '.join(sorted(self.routes)) or 'none'})")
        for prefix, route in self.routes.items():
            if route.service not in self.services:
                raise ValueError(
                    f"routes.{prefix}.service: unknown service {route.service!r} "
                    f"(known: {', '.join(sorted(self.services)) or 'none'})"
                )
        for prefix, route in self.routes.items():
            if route.auth is None:
                continue
            if self.auth.mode == "headers":
                raise ValueError(f"routes.{prefix}.auth: credentials are not checked in auth.mode "
                                 "'headers' (the proxy in front authenticates)")
            if "jwt" in route.auth.require and self.auth.jwt is None:
                raise ValueError(f"routes.{prefix}.auth.require: 'jwt' needs auth.jwt configured")
        for consumer in self.auth.consumers:
            if consumer.tier not in self.rate_limits:
                raise ValueError(f"auth.consumers.{consumer.id}.tier: unknown tier {consumer.tier!r}")
        for name in ("default", "anonymous"):
            if name not in self.rate_limits:
                raise ValueError(f"rate_limits.{name}: the {name!r} tier is required")
        ids = [c.id for c in self.auth.consumers]
        if len(ids) != len(set(ids)):
            raise ValueError("auth.consumers: consumer ids must be unique")
        return self

    def breaker_for(self, service: str) -> BreakerSettings:
        """The global breaker settings with the service's own overrides applied."""
        override = self.services[service].circuit_breaker
        if not override:
            return self.circuit_breaker
        merged = self.circuit_breaker.model_dump()
        for key, value in override.items():
            if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
                merged[key] = {**merged[key], **value}  # e.g. error_ratio: {min_requests: 5}
            else:
                merged[key] = value
        return BreakerSettings(**merged)


# -- loading -----------------------------------------------------------------------------------
def env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    """`GATEWAY_REDIS__URL=x` -> {"redis": {"url": "x"}}; values are parsed as YAML scalars."""
    tree: dict[str, Any] = {}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue
        path = [p.lower() for p in name[len(ENV_PREFIX):].split("__") if p]
        try:
            value = yaml.safe_load(raw) if raw != "" else None
        except yaml.YAMLError:
            value = raw
        node = tree
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{name}: conflicts with another override")
        node[path[-1]] = value
    return tree


def env_sources(environ: Mapping[str, str]) -> dict[str, str]:
    """Which variable set which field: {"redis.url": "GATEWAY_REDIS__URL"} (for error messages)."""
    return {
        ".".join(p.lower() for p in name[len(ENV_PREFIX):].split("__") if p): name
        for name in environ if name.startswith(ENV_PREFIX) and "__" in name
    }


def _merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(dict(out[key]), value)
        else:
            out[key] = value
    return out


def config_path(explicit: str | None = None, environ: Mapping[str, str] | None = None) -> Path:
    environ = os.environ if environ is None else environ
    return Path(explicit or environ.get("GATEWAY_CONFIG") or DEFAULT_CONFIG_FILE)


def parse_config(data: Any, source: str = "config",
                 env: Mapping[str, str] | None = None) -> GatewayConfig:
    """Validate a mapping; raise ConfigError naming every bad field (and, for a field an
    environment variable set, that variable: see `env_sources`)."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: the top level must be a mapping of sections")
    try:
        return GatewayConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{source}: invalid configuration\n" + _describe(exc, env or {})) from None


def _describe(exc: ValidationError, env: Mapping[str, str]) -> str:
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"] if not str(p).startswith("function-"))
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        elif err["type"] == "missing":
            msg = "required field is missing"
        # The field itself or a section above it came from the environment: say which variable
        # (never its value, which may be a secret).
        parts = loc.split(".")
        variable = next((env[p] for p in (".".join(parts[:i]) for i in range(len(parts), 0, -1))
                         if p in env), None)
        where = f" (set by the environment variable {variable})" if variable else ""
        lines.append(f"  {loc or '(top level)'}: {msg}{where}")
    return "\n".join(lines)


def load_config(path: str | Path | None = None, environ: Mapping[str, str] | None = None) -> GatewayConfig:
    """Read the file, apply environment overrides, validate."""
    environ = os.environ if environ is None else environ
    file = config_path(str(path) if path else None, environ)
    try:
        text = file.read_text()
    except FileNotFoundError:
        raise ConfigError(f"{file}: config file not found (use --config or GATEWAY_CONFIG)") from None
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{file}: not valid YAML: {exc}") from None
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{file}: the top level must be a mapping of sections")
    return parse_config(_merge(dict(data), env_overrides(environ)), str(file), env_sources(environ))
