import base64

import pytest

from tributary_connector.handshake import (COOKIE_MISMATCH_TEXT, CookieError, HandshakeConfig,
                                           b64_no_padding, check_cookie, format_handshake_line,
                                           negotiate_version, parse_protocol_versions)


def test_line_without_certificate_has_six_fields_and_a_trailing_bar():
    assert format_handshake_line(1, "unix", "/tmp/plugin123") == "1|1|unix|/tmp/plugin123|grpc|\n"


def test_line_with_certificate_uses_unpadded_base64():
    der = bytes(range(256)) * 2 + b"xy"  # 514 bytes: standard base64 would need "=" padding
    line = format_handshake_line(3, "unix", "/tmp/p", der)
    fields = line.rstrip("\n").split("|")
    assert fields[:5] == ["1", "3", "unix", "/tmp/p", "grpc"]
    assert len(fields) == 6, "never a 7th (multiplexing) field"
    assert "=" not in fields[5] and len(fields[5]) > 50
    assert base64.b64decode(fields[5] + "=" * (-len(fields[5]) % 4)) == der


def test_tcp_line():
    assert format_handshake_line(1, "tcp", "127.0.0.1:10000") == "1|1|tcp|127.0.0.1:10000|grpc|\n"


@pytest.mark.parametrize("network,address", [("udp", "/x"), ("unix", "/a|b"), ("unix", "/a\nb")])
def test_line_rejects_what_would_break_the_host(network, address):
    with pytest.raises(ValueError):
        format_handshake_line(1, network, address)


@pytest.mark.parametrize("n", range(0, 8))
def test_b64_no_padding_matches_go_raw_std_encoding(n):
    data = bytes(range(n))
    out = b64_no_padding(data)
    assert "=" not in out
    assert out == base64.b64encode(data).decode().rstrip("=")
    assert base64.b64decode(out + "=" * (-len(out) % 4)) == data


@pytest.mark.parametrize("env,expected,invalid", [
    (None, [], []),
    ("", [], []),
    ("1", [1], []),
    ("5,6", [5, 6], []),
    (" 2 , x ,,3", [2, 3], ["x"]),
    ("1.5,7", [7], ["1.5"]),
])
def test_parse_protocol_versions(env, expected, invalid):
    assert parse_protocol_versions(env) == (expected, invalid)


@pytest.mark.parametrize("ours,host,expected", [
    ([1], [1], 1),
    ([1, 2, 3], [2, 3], 3),   # highest common
    ([1, 2], [2, 5], 2),
    ([2, 3], [1], 2),         # none in common: our lowest, the host rejects it
    ([4, 2], [], 2),          # variable absent: our lowest
])
def test_negotiate_version(ours, host, expected):
    assert negotiate_version(ours, host) == expected


def test_negotiate_needs_a_version():
    with pytest.raises(ValueError):
        negotiate_version([], [1])


def test_cookie():
    cfg = HandshakeConfig()
    check_cookie(cfg, {"BASIC_PLUGIN": "hello"})
    with pytest.raises(CookieError) as e:
        check_cookie(cfg, {"BASIC_PLUGIN": "bye"})
    assert str(e.value) == COOKIE_MISMATCH_TEXT
    with pytest.raises(CookieError):
        check_cookie(cfg, {})
    check_cookie(HandshakeConfig(2, "OTHER", "x"), {"OTHER": "x"})
    with pytest.raises(ValueError):
        check_cookie(HandshakeConfig(1, "", "x"), {"": "x"})
