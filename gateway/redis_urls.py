"""Redis URLs: which servers a `redis+cluster://` or `redis+sentinel://` URL names, and a URL fit
for a log line. Used by the configuration (to refuse a bad URL at load time) and by the stores
(gateway/topology.py) alike, so it depends on neither.

URL forms (several seed hosts separated by commas, credentials optional)::

    redis+cluster://[user:password@]host:port[,host:port...]      (rediss+cluster:// for TLS)
    redis+sentinel://[user:password@]host:port[,host:port...]/master-name[?db=0]
                     [&sentinel_password=...]
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import parse_qs, unquote, urlsplit


def redact(url: str) -> str:
    """The URL without its password, for logs."""
    if "@" not in url:
        return url
    scheme, _, rest = url.partition("://")
    creds, _, host = rest.rpartition("@")
    return f"{scheme}://***@{host}" if creds else url


CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")
SENTINEL_SCHEMES = ("redis+sentinel",)


@dataclass(frozen=True)
class Topology:
    """What a `redis+cluster://` or `redis+sentinel://` URL names."""

    kind: str  # "cluster" or "sentinel"
    hosts: list[tuple[str, int]]
    tls: bool = False
    username: str | None = None
    password: str | None = None
    master_name: str | None = None
    db: int = 0
    sentinel_password: str | None = field(default=None, repr=False)


def parse_url(url: str) -> Topology:
    """Parse a Cluster / Sentinel URL; raises ValueError with a message naming what is wrong."""
    scheme, sep, _ = url.partition("://")
    if not sep or scheme not in CLUSTER_SCHEMES + SENTINEL_SCHEMES:
        raise ValueError(f"not a redis+cluster:// or redis+sentinel:// URL: {redact(url)!r}")
    parts = urlsplit(url)
    userinfo, at, hostlist = parts.netloc.rpartition("@")
    username = password = None
    if at:
        user, colon, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon else None
    kind = "cluster" if scheme in CLUSTER_SCHEMES else "sentinel"
    hosts = [_host_port(item, 6379 if kind == "cluster" else 26379)
             for item in hostlist.split(",") if item.strip()]
    if not hosts:
        raise ValueError(f"{scheme}:// needs at least one host:port")
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    path = [p for p in parts.path.split("/") if p]
    tls = scheme.startswith("rediss")
    if kind == "cluster":
        if path not in ([], ["0"]) or query.get("db", "0") != "0":
            raise ValueError("Redis Cluster has only database 0: remove the /db from the URL")
        return Topology("cluster", hosts, tls, username, password)
    if not path:
        raise ValueError("redis+sentinel:// needs the master name as its path, "
                         "e.g. redis+sentinel://127.0.0.1:26379/mymaster")
    if len(path) > 2:
        raise ValueError("redis+sentinel:// path is /master-name or /master-name/db")
    db_text = query.get("db", path[1] if len(path) == 2 else "0")
    if not db_text.isdigit():
        raise ValueError(f"db must be a number, got {db_text!r}")
    return Topology("sentinel", hosts, tls, username, password, master_name=unquote(path[0]),
                    db=int(db_text), sentinel_password=query.get("sentinel_password"))


def _host_port(item: str, default_port: int) -> tuple[str, int]:
    item = item.strip()
    if item.startswith("["):  # [IPv6]:port
        host, _, rest = item[1:].partition("]")
        port_text = rest.removeprefix(":")
    else:
        host, _, port_text = item.rpartition(":") if ":" in item else (item, "", "")
    if not host:
        raise ValueError(f"missing host in {item!r}")
    if not port_text:
        return host, default_port
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"bad port in {item!r}")
    return host, int(port_text)
