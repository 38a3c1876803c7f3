"""go-plugin start-up logic that needs no network: cookie, version negotiation, handshake line.

Everything here is pure so that it can be unit-tested; `serve()` wires it together.
"""

from __future__ import annotations

import base64
import dataclasses
import os
import sys
from typing import Iterable, List, Mapping, Optional, Tuple

#: go-plugin's CoreProtocolVersion; 1 in every go-plugin release.
CORE_PROTOCOL_VERSION = 1

#: Exactly the text a Go plugin (`plugin.Serve`) prints when the magic cookie does not match.
COOKIE_MISMATCH_TEXT = (
    "This binary is a plugin. These are not meant to be executed directly.\n"
    "Please execute the program that consumes these plugins, which will\n"
    "load any plugins automatically\n"
)

MISCONFIGURED_TEXT = (
    "Misconfigured ServeConfig given to serve this plugin: no magic cookie\n"
    "key or value was set. Please notify the plugin author and report\n"
    "this as a bug.\n"
)


@dataclasses.dataclass(frozen=True)
class HandshakeConfig:
    """The go-plugin handshake a host and its plugins agree on.

    The defaults are c1's (and go-plugin's examples'): cookie ``BASIC_PLUGIN=hello``, app protocol
    version 1. Other go-plugin ecosystems use their own cookie and version.
    """

    protocol_version: int = 1
    magic_cookie_key: str = "BASIC_PLUGIN"
    magic_cookie_value: str = "hello"


DEFAULT_HANDSHAKE = HandshakeConfig()


class CookieError(Exception):
    """The process was not started by a host that knows the magic cookie."""


def check_cookie(config: HandshakeConfig, environ: Mapping[str, str]) -> None:
    """Raise CookieError (with go-plugin's message as text) unless the cookie matches.

    A config without key or value is a programming error (ValueError), like go-plugin's
    "Misconfigured ServeConfig".
    """
    if not config.magic_cookie_key or not config.magic_cookie_value:
        raise ValueError(MISCONFIGURED_TEXT)
    if environ.get(config.magic_cookie_key) != config.magic_cookie_value:
        raise CookieError(COOKIE_MISMATCH_TEXT)


def parse_protocol_versions(value: Optional[str]) -> Tuple[List[int], List[str]]:
    """Parse ``PLUGIN_PROTOCOL_VERSIONS`` (comma separated). Returns (versions, invalid entries).

    Like go-plugin, invalid entries are skipped (the caller reports them) and empty entries ignored.
    """
    versions: List[int] = []
    invalid: List[str] = []
    if not value:
        return versions, invalid
    for raw in value.split(","):
        item = raw.strip()
        if not item:
            continue
        try:
            versions.append(int(item, 10))
        except ValueError:
            invalid.append(item)
    return versions, invalid


def negotiate_version(supported: Iterable[int], host_versions: Iterable[int]) -> int:
    """go-plugin's plugin-side negotiation.

    Walk our versions from highest to lowest and return the first one the host offers; when none
    matches (or the host sent nothing) return our *lowest* version and let the host reject it.
    """
    ours = sorted(set(supported), reverse=True)
    if not ours:
        raise ValueError("the plugin supports no protocol version")
    offered = set(host_versions)
    for v in ours:
        if v in offered:
            return v
    return ours[-1]


def b64_no_padding(data: bytes) -> str:
    """Standard-alphabet base64 without ``=`` padding (Go's ``base64.RawStdEncoding``)."""
    return base64.b64encode(data).decode("ascii").rstrip("=")


def format_handshake_line(app_version: int, network: str, address: str,
                          server_cert_der: Optional[bytes] = None,
                          protocol: str = "grpc") -> str:
    """The line a plugin prints first on stdout, newline included.

    ``1|<appver>|<network>|<address>|grpc|<cert>`` - always six fields (a trailing ``|`` when no
    certificate), exactly as a Go plugin writes it. We never append go-plugin v1.6's 7th
    multiplexing field because we do not implement the multiplexed broker.
    """
    if network not in ("unix", "tcp"):
        raise ValueError(f"unknown network {network!r}")
    for name, value in (("address", address), ("protocol", protocol)):
        if "|" in value or "\n" in value or "\r" in value:
            raise ValueError(f"{name} {value!r} cannot appear in a handshake line")
    cert = b64_no_padding(server_cert_der) if server_cert_der else ""
    return f"{CORE_PROTOCOL_VERSION}|{int(app_version)}|{network}|{address}|{protocol}|{cert}\n"


def exit_on_cookie_mismatch(config: HandshakeConfig, environ: Optional[Mapping[str, str]] = None) -> None:
    """Behave like ``plugin.Serve``: message on stderr and exit status 1 when the cookie is wrong."""
    env = os.environ if environ is None else environ
    try:
        check_cookie(config, env)
    except (CookieError, ValueError) as e:
        sys.stderr.write(str(e))
        sys.stderr.flush()
        sys.exit(1)
