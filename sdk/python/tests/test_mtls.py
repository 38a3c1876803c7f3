import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tributary_connector.mtls import (MTLSError, TLSConfig, generate_certificate, grpc_tls_accepts,
                                      load_host_certificate)


@pytest.mark.parametrize("curve,name", [("P-256", "secp256r1"), ("P-521", "secp521r1")])
def test_certificate_shape(curve, name):
    c = generate_certificate(curve)
    cert = x509.load_der_x509_certificate(c.cert_der)
    assert cert.public_key().curve.name == name
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "localhost"
    assert cert.issuer == cert.subject
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert (cert.not_valid_after_utc - cert.not_valid_before_utc).days > 10 * 365
    assert c.cert_pem.startswith(b"-----BEGIN CERTIFICATE-----")
    assert b"PRIVATE KEY" in c.key_pem


def test_unknown_curve():
    with pytest.raises(MTLSError):
        generate_certificate("P-999")


def test_host_certificate_validation():
    pem = generate_certificate("P-256").cert_pem
    assert load_host_certificate(pem.decode()).startswith(b"-----BEGIN CERTIFICATE-----")
    with pytest.raises(MTLSError):
        load_host_certificate("not a certificate")


def test_engine_follows_the_host_key():
    # go-plugin hosts use P-521, which grpcio's BoringSSL cannot verify under TLS 1.3.
    p521 = generate_certificate("P-521")
    p256 = generate_certificate("P-256")
    assert not grpc_tls_accepts(x509.load_der_x509_certificate(p521.cert_der))
    assert grpc_tls_accepts(x509.load_der_x509_certificate(p256.cert_der))
    own = generate_certificate()
    assert TLSConfig(own, p521.cert_pem).engine == "openssl"
    assert TLSConfig(own, p256.cert_pem).engine == "grpc"
    assert TLSConfig(own, p256.cert_pem, engine="openssl").engine == "openssl"
    with pytest.raises(MTLSError):
        TLSConfig(own, p256.cert_pem, engine="nope")


def test_from_env():
    assert TLSConfig.from_env({}) is None
    host = generate_certificate("P-521").cert_pem.decode()
    cfg = TLSConfig.from_env({"PLUGIN_CLIENT_CERT": host, "TRIBUTARY_MTLS_CURVE": "P-384"})
    assert x509.load_der_x509_certificate(cfg.own.cert_der).public_key().curve.name == "secp384r1"
    assert cfg.engine == "openssl"
    try:
        assert cfg.ssl_server_context() is cfg.ssl_server_context()
        assert cfg.ssl_client_context() is not None
    finally:
        cfg.close()
