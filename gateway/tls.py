"""TLS termination on the public port: certificates, SNI, reload, and the HTTP -> HTTPS redirect.

`tls: {cert_file, key_file}` (PEM; the certificate file may hold the chain after the leaf) turns
the public listener into HTTPS. More certificates (`tls.certificates`) are chosen by the name
the client asks for (SNI): each serves the DNS names of its certificate (subjectAltName), or
the `server_names` given; `*.example.com` matches one label; a name nobody serves gets the
first certificate. TLS 1.2 and 1.3 only (`min_version: "1.3"` for 1.3 only), forward-secret
AEAD ciphers for 1.2 (Mozilla's "intermediate" list), ALPN `http/1.1`, no compression, no
renegotiation, no session tickets by default (`session_tickets`).

Certificates are reloaded with the configuration: the listener's context stays, and picks the
current certificate set at each handshake (its SNI callback), so a new certificate is served
to the next connection and no open connection is dropped.

`tls.redirect_from: HOST:PORT` opens a plain-HTTP listener answering every request with a 308
to the same path on HTTPS (the request's host, the HTTPS port), as nginx's `return 308
https://...` servers do.
"""

from __future__ import annotations

import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from gateway.settings import Section, host_port

# Mozilla's "intermediate" TLS 1.2 suites: ECDHE key exchange, AEAD ciphers only.
MODERN_CIPHERS = ("ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
                  "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
                  "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305")


class TlsCertificate(Section):
    cert_file: str = Field(description="PEM: the certificate, then its chain")
    key_file: str = Field(description="PEM: its private key (unencrypted)")
    server_names: list[str] | None = Field(
        None, description="the names it serves (default: the certificate's DNS names)")


class TlsSettings(Section):
    """HTTPS on the public port (see gateway/tls.py)."""

    cert_file: str = Field(description="PEM: the default certificate, then its chain")
    key_file: str
    certificates: list[TlsCertificate] = Field(
        default_factory=list, description="more certificates, chosen by SNI")
    min_version: Literal["1.2", "1.3"] = "1.2"
    ciphers: str = Field(MODERN_CIPHERS, min_length=1, description="OpenSSL cipher list for TLS 1.2")
    session_tickets: bool = False
    redirect_from: str | None = Field(
        None, description="host:port of a plain-HTTP listener that redirects to HTTPS (308)")

    @field_validator("redirect_from")
    @classmethod
    def _address(cls, value: str | None) -> str | None:
        if value is not None:
            host_port(value)
        return value

    @model_validator(mode="after")
    def _loadable(self) -> TlsSettings:
        build_certificates(self)  # a missing file, a key that does not match: named here
        return self


@dataclass(frozen=True)
class CertificateSet:
    """The contexts of one configuration: the default and the ones chosen by name."""

    default: ssl.SSLContext
    exact: dict[str, ssl.SSLContext]
    wildcard: dict[str, ssl.SSLContext]  # "example.com" for *.example.com

    def pick(self, name: str | None) -> ssl.SSLContext:
        if not name:
            return self.default
        name = name.lower().rstrip(".")
        found = self.exact.get(name)
        if found is None and "." in name:
            found = self.wildcard.get(name.split(".", 1)[1])
        return found or self.default


def _context(settings: TlsSettings, cert_file: str, key_file: str, where: str) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = (ssl.TLSVersion.TLSv1_3 if settings.min_version == "1.3"
                               else ssl.TLSVersion.TLSv1_2)
    try:
        context.set_ciphers(settings.ciphers)
    except ssl.SSLError:
        raise ValueError(f"ciphers: no usable cipher in {settings.ciphers!r}") from None
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION | ssl.OP_CIPHER_SERVER_PREFERENCE
    if not settings.session_tickets:
        context.options |= ssl.OP_NO_TICKET
    context.set_alpn_protocols(["http/1.1"])
    for field, path in (("cert_file", cert_file), ("key_file", key_file)):
        if not Path(path).is_file():
            raise ValueError(f"{where}{field}: {path} is not a readable file")
    try:
        context.load_cert_chain(cert_file, key_file)
    except ssl.SSLError as exc:
        raise ValueError(f"{where}cert_file / key_file: cannot be used together ({exc.reason or exc})") from None
    except OSError as exc:
        raise ValueError(f"{where}cert_file / key_file: {exc.strerror or exc}") from None
    return context


def certificate_names(cert_file: str) -> list[str]:
    """The DNS names (subjectAltName, else the common name) of the first certificate in a PEM file."""
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    cert = x509.load_pem_x509_certificate(Path(cert_file).read_bytes())
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = [str(n) for n in san.get_values_for_type(x509.DNSName)]
    except x509.ExtensionNotFound:
        names = []
    if not names:
        names = [str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    return [n.lower() for n in names if not _is_ip(n)]


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def build_certificates(settings: TlsSettings) -> CertificateSet:
    """Load every certificate of `settings`; raises ValueError naming the field."""
    default = _context(settings, settings.cert_file, settings.key_file, "")
    exact: dict[str, ssl.SSLContext] = {}
    wildcard: dict[str, ssl.SSLContext] = {}
    for i, cert in enumerate(settings.certificates):
        where = f"certificates.{i}."
        context = _context(settings, cert.cert_file, cert.key_file, where)
        try:
            names = cert.server_names or certificate_names(cert.cert_file)
        except ValueError as exc:
            raise ValueError(f"{where}cert_file: not a PEM certificate ({exc})") from None
        if not names:
            raise ValueError(f"{where}server_names: the certificate names no DNS name; list them")
        for name in names:
            name = name.lower().rstrip(".")
            table, key = (wildcard, name[2:]) if name.startswith("*.") else (exact, name)
            table.setdefault(key, context)
    return CertificateSet(default, exact, wildcard)


class TlsTerminator:
    """The listener's SSL context; the certificates behind it can be swapped at any time."""

    def __init__(self, settings: TlsSettings, handshake_timeout: float = 10.0) -> None:
        self.settings = settings
        self.handshake_timeout = handshake_timeout
        self.certificates = build_certificates(settings)
        # The listener's own context only hands each handshake to the current certificates.
        self.context = _context(settings, settings.cert_file, settings.key_file, "")
        self.context.sni_callback = self._pick  # type: ignore[assignment]

    def _pick(self, connection: Any, name: str | None, _: ssl.SSLContext) -> None:
        connection.context = self.certificates.pick(name)

    def reload(self, settings: TlsSettings) -> None:
        """Serve `settings`' certificates from the next handshake on (raises ValueError)."""
        self.certificates = build_certificates(settings)
        self.settings = settings


def redirect_handler(https_port: int) -> Any:
    """The plain-HTTP listener's handler: 308 to the same target on HTTPS."""
    async def answer(request: Any) -> None:  # the engine's Request
        host = _host_of(request)
        shown = host if https_port == 443 else f"{host}:{https_port}"
        target = request.path + (b"?" + request.query if request.query else b"")
        location = b"https://" + shown.encode("idna") + target
        body = b"Redirecting to HTTPS\n"
        request.conn.respond(308, [(b"location", location), (b"content-type", b"text/plain"),
                                   (b"cache-control", b"no-store")], body)

    return answer


def _host_of(request: Any) -> str:
    for name, value in request.headers:
        if name == b"host":
            text = value.decode("latin-1").strip()
            if text.startswith("["):
                return text.split("]", 1)[0] + "]"
            return text.rsplit(":", 1)[0] if ":" in text else text
    return "localhost"
