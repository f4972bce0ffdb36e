"""
Integration tests of TLS upstreams: a real loopback server with a
self-signed certificate, verified against C{--upstream-ca}.
"""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest_twisted
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from twisted.internet import reactor, ssl
from twisted.web.resource import Resource
from twisted.web.server import Site

from tests.integration.test_proxy import Cleanup, cleanup, get, proxy  # noqa: F401


def selfSigned(directory: Path, name: str = "localhost") -> tuple[Path, bytes]:
    """
    Write a self-signed certificate for C{name} and return the path of its
    PEM and the PEM of key and certificate together.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    certPem = cert.public_bytes(serialization.Encoding.PEM)
    keyPem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    path = directory / "ca.pem"
    path.write_bytes(certPem)
    return path, keyPem + certPem


class Hello(Resource):
    isLeaf = True

    def render(self, request):  # type: ignore[no-untyped-def]
        request.setHeader(b"content-type", b"text/plain")
        proto = request.getHeader(b"x-forwarded-proto") or b"?"
        return b"hello over tls, client came by " + proto


async def tlsUpstream(cleanup: Cleanup, pem: bytes) -> int:
    site = Site(Hello())
    site.noisy = False
    options = ssl.PrivateCertificate.loadPEM(pem).options()
    port = reactor.listenSSL(0, site, options, interface="127.0.0.1")
    cleanup.add(port.stopListening)
    return port.getHost().port


@pytest_twisted.ensureDeferred
async def test_https_upstream_verified_with_upstream_ca(cleanup: Cleanup, tmp_path: Path) -> None:
    """An https upstream whose certificate chains to --upstream-ca is proxied over TLS."""
    ca, pem = selfSigned(tmp_path)
    upPort = await tlsUpstream(cleanup, pem)
    port, _ = await proxy(
        cleanup, "--route", f"a.test=https://localhost:{upPort}", "--upstream-ca", str(ca)
    )
    r = await get(cleanup, port, b"/", b"a.test")
    assert r.code == 200, r
    assert r.body == b"hello over tls, client came by http"


@pytest_twisted.ensureDeferred
async def test_https_upstream_unverified_is_refused(cleanup: Cleanup, tmp_path: Path) -> None:
    """An https upstream whose certificate is not trusted gets no request: 502."""
    _, pem = selfSigned(tmp_path)
    upPort = await tlsUpstream(cleanup, pem)
    port, _ = await proxy(cleanup, "--route", f"a.test=https://localhost:{upPort}")
    r = await get(cleanup, port, b"/", b"a.test")
    assert r.code == 502, r
