"""go-plugin AutoMTLS, plugin side.

When the host sets ``PLUGIN_CLIENT_CERT`` (its self-signed certificate, PEM), the plugin:

* generates its own key and a self-signed certificate shaped like go-plugin's (CN/SAN ``localhost``,
  EKU serverAuth + clientAuth, CA=true so the certificate can be its own trust root);
* serves TLS that *requires* a client certificate and trusts only the host's certificate;
* prints its certificate (DER, base64 without padding) as the 6th handshake field;
* dials host-served broker services trusting the host's certificate, presenting its own, with the
  TLS name ``localhost``.

Curve of our certificate: **P-256** by default, not go-plugin's P-521. Measured with grpcio 1.85.1
(BoringSSL): grpcio accepts a P-521 key in neither role under TLS 1.3 (its signature-algorithm list
lacks ecdsa_secp521r1_sha512), so a P-521 plugin certificate would break every host built on
grpcio/BoringSSL, while Go and OpenSSL-based hosts accept P-256 as well. ``TRIBUTARY_MTLS_CURVE``
(P-256, P-384, P-521) overrides it.

The same gap means grpcio's TLS cannot talk to a Go host's P-521 certificate at all: for such hosts
TLS is terminated by Python's ssl module instead (tlsproxy.py). ``TRIBUTARY_MTLS_ENGINE``
(auto, grpc, openssl) overrides the choice.
"""

from __future__ import annotations

import datetime as _dt
import os
import shutil
import ssl
import tempfile
import threading
from dataclasses import dataclass
from typing import Optional

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

#: Name the peers use for TLS verification (go-plugin: always "localhost").
TLS_SERVER_NAME = "localhost"

_CURVES = {
    "P-256": (ec.SECP256R1, hashes.SHA256),
    "P-384": (ec.SECP384R1, hashes.SHA384),
    "P-521": (ec.SECP521R1, hashes.SHA512),
}
DEFAULT_CURVE = "P-256"


class MTLSError(Exception):
    pass


@dataclass(frozen=True)
class Certificate:
    cert_pem: bytes
    key_pem: bytes
    cert_der: bytes


def generate_certificate(curve: str = DEFAULT_CURVE, organization: str = "Tributary",
                         now: Optional[_dt.datetime] = None) -> Certificate:
    """A self-signed certificate like go-plugin's ``generateCert`` (valid 30 s ago .. ~30 years)."""
    try:
        curve_cls, hash_cls = _CURVES[curve]
    except KeyError:
        raise MTLSError(f"unsupported curve {curve!r}; use one of {', '.join(_CURVES)}") from None
    key = ec.generate_private_key(curve_cls())
    now = now or _dt.datetime.now(_dt.timezone.utc)
    name = x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
        x509.NameAttribute(NameOID.COMMON_NAME, TLS_SERVER_NAME),
    ])
    serial = int.from_bytes(os.urandom(16), "big") >> 1 or 1
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(now - _dt.timedelta(seconds=30))
        .not_valid_after(now + _dt.timedelta(hours=262980))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=True,
            data_encipherment=False, key_agreement=True, key_cert_sign=True, crl_sign=False,
            encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage(
            [ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(TLS_SERVER_NAME)]), critical=False)
        .sign(key, hash_cls())
    )
    return Certificate(
        cert_pem=cert.public_bytes(serialization.Encoding.PEM),
        key_pem=key.private_bytes(serialization.Encoding.PEM,
                                  serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()),
        cert_der=cert.public_bytes(serialization.Encoding.DER),
    )


def load_host_certificate(pem: str) -> bytes:
    """Validate the host's ``PLUGIN_CLIENT_CERT`` and return it as PEM bytes (one certificate)."""
    data = pem.encode("ascii", "strict") if isinstance(pem, str) else pem
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError as e:
        raise MTLSError(f"PLUGIN_CLIENT_CERT is not a PEM certificate: {e}") from None
    if not certs:
        raise MTLSError("PLUGIN_CLIENT_CERT holds no certificate")
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


#: TLS engines: "grpc" = grpcio's own TLS (BoringSSL); "openssl" = Python's ssl in front of
#: plaintext gRPC on private sockets (see tlsproxy.py); "auto" picks per host certificate.
ENGINES = ("auto", "grpc", "openssl")


def grpc_tls_accepts(cert: x509.Certificate) -> bool:
    """Can grpcio's BoringSSL verify a TLS 1.3 peer that signs with this certificate's key?

    Its signature-algorithm list covers ECDSA P-256/P-384, RSA and RSA-PSS, but not ECDSA P-521
    (go-plugin's curve) nor Ed25519.
    """
    key = cert.public_key()
    if isinstance(key, ec.EllipticCurvePublicKey):
        return key.curve.name in ("secp256r1", "secp384r1")
    return isinstance(key, rsa.RSAPublicKey)


class TLSConfig:
    """Our certificate plus the host certificate we trust, for both serving and dialing.

    ``engine`` is "grpc" or "openssl" (resolved from "auto": grpc when grpcio can verify the host's
    key, openssl otherwise - i.e. for every go-plugin Go host, whose key is P-521).
    """

    def __init__(self, own: Certificate, host_cert_pem: bytes, engine: str = "auto"):
        if engine not in ENGINES:
            raise MTLSError(f"unknown TLS engine {engine!r}; use one of {', '.join(ENGINES)}")
        self.own = own
        self.host_cert_pem = host_cert_pem
        self.host_certificate = x509.load_pem_x509_certificate(host_cert_pem)
        if engine == "auto":
            engine = "grpc" if grpc_tls_accepts(self.host_certificate) else "openssl"
        self.engine = engine
        self._lock = threading.Lock()
        self._private_dir: Optional[str] = None
        self._proxy = None
        self._ssl_server: Optional[ssl.SSLContext] = None
        self._ssl_client: Optional[ssl.SSLContext] = None

    @classmethod
    def from_env(cls, environ, curve: Optional[str] = None) -> Optional["TLSConfig"]:
        pem = environ.get("PLUGIN_CLIENT_CERT")
        if not pem:
            return None
        curve = curve or environ.get("TRIBUTARY_MTLS_CURVE") or DEFAULT_CURVE
        engine = environ.get("TRIBUTARY_MTLS_ENGINE") or "auto"
        return cls(own=generate_certificate(curve), host_cert_pem=load_host_certificate(pem),
                   engine=engine)

    def describe(self) -> dict:
        key = self.host_certificate.public_key()
        host_key = getattr(getattr(key, "curve", None), "name", type(key).__name__)
        own_key = x509.load_der_x509_certificate(self.own.cert_der).public_key()
        return {"tls_engine": self.engine, "host_key": host_key,
                "own_key": getattr(getattr(own_key, "curve", None), "name", "?")}

    # ---- grpcio's own TLS --------------------------------------------------------------------

    def server_credentials(self) -> grpc.ServerCredentials:
        return grpc.ssl_server_credentials(
            [(self.own.key_pem, self.own.cert_pem)],
            root_certificates=self.host_cert_pem,
            require_client_auth=True,
        )

    def channel_credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=self.host_cert_pem,
            private_key=self.own.key_pem,
            certificate_chain=self.own.cert_pem,
        )

    #: Channel options to add when dialing with channel_credentials().
    channel_options = (("grpc.ssl_target_name_override", TLS_SERVER_NAME),)

    # ---- OpenSSL engine ----------------------------------------------------------------------

    def private_dir(self, parent: Optional[str] = None) -> str:
        """A 0700 directory for the plaintext sockets behind the TLS proxy."""
        with self._lock:
            if self._private_dir is None:
                self._private_dir = tempfile.mkdtemp(prefix="tributary-plugin-", dir=parent)
            return self._private_dir

    @property
    def proxy(self):
        from .tlsproxy import TLSProxy
        with self._lock:
            if self._proxy is None:
                self._proxy = TLSProxy()
            return self._proxy

    def _load_own(self, ctx: ssl.SSLContext) -> None:
        from .tlsproxy import cert_file_path
        path, fd = cert_file_path(self.own.cert_pem + self.own.key_pem,
                                  self.private_dir(), "own.pem")
        try:
            ctx.load_cert_chain(path)
        finally:
            if fd is not None:
                os.close(fd)
            else:
                os.unlink(path)

    def ssl_server_context(self) -> ssl.SSLContext:
        """Require a client certificate signed by (= equal to) the host certificate; ALPN h2."""
        with self._lock:
            ctx = self._ssl_server
        if ctx is None:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            ctx.verify_mode = ssl.CERT_REQUIRED
            ctx.load_verify_locations(cadata=self.host_cert_pem.decode("ascii"))
            self._load_own(ctx)
            ctx.set_alpn_protocols(["h2"])
            if hasattr(ctx, "num_tickets"):
                ctx.num_tickets = 0  # nobody resumes sessions here
            with self._lock:
                self._ssl_server = ctx
        return ctx

    def ssl_client_context(self) -> ssl.SSLContext:
        """Trust only the host certificate, name ``localhost``, present ours; ALPN h2."""
        with self._lock:
            ctx = self._ssl_client
        if ctx is None:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            ctx.load_verify_locations(cadata=self.host_cert_pem.decode("ascii"))
            self._load_own(ctx)
            ctx.set_alpn_protocols(["h2"])
            with self._lock:
                self._ssl_client = ctx
        return ctx

    def close(self) -> None:
        """Stop the TLS proxy and remove the private directory."""
        with self._lock:
            proxy, self._proxy = self._proxy, None
            private, self._private_dir = self._private_dir, None
        if proxy is not None:
            proxy.close()
        if private is not None:
            shutil.rmtree(private, ignore_errors=True)
