"""Listeners for the plugin's gRPC servers (main server and broker-offered services).

Unix: a socket ``<dir>/plugin<random>`` where dir is ``$PLUGIN_UNIX_SOCKET_DIR`` (go-plugin v1.5+),
else ``$TMPDIR``, else ``/tmp``; with ``$PLUGIN_UNIX_SOCKET_GROUP`` the socket gets that group and
mode 0660. Platforms without Unix sockets: TCP 127.0.0.1 on the first free port of
``PLUGIN_MIN_PORT..PLUGIN_MAX_PORT`` (unset/0 => any port), like go-plugin on Windows.
"""

from __future__ import annotations

import logging
import os
import socket
import tempfile
from dataclasses import dataclass, field
from typing import Optional

import grpc

from .mtls import TLSConfig

try:
    import grp
except ImportError:  # pragma: no cover - not a Unix system
    grp = None

log = logging.getLogger("tributary_connector.transport")

# sockaddr_un.sun_path is 108 bytes on Linux (104 on macOS/BSD), NUL included.
_MAX_UNIX_PATH = 103 if os.uname().sysname != "Linux" else 107


class ListenError(Exception):
    pass


@dataclass
class Listener:
    network: str  # "unix" or "tcp"
    address: str  # socket path or host:port (what the peer dials)
    group: Optional[str] = None
    #: With the OpenSSL TLS engine: the private plaintext socket the gRPC server listens on.
    backend: Optional[str] = None
    tls: Optional[TLSConfig] = field(default=None, repr=False)
    _cleaned: bool = field(default=False, repr=False)

    def after_start(self) -> None:
        """Call once the gRPC server started: starts the TLS proxy (OpenSSL engine) and applies
        ownership/permissions to the socket file."""
        if self.backend is not None:
            self.tls.proxy.serve_tls(self.address, self.backend, self.tls.ssl_server_context())
        if self.network != "unix" or not self.group:
            return
        gid = resolve_group(self.group)
        os.chown(self.address, -1, gid)
        os.chmod(self.address, 0o660)

    def cleanup(self) -> None:
        if self._cleaned or self.network != "unix":
            return
        self._cleaned = True
        for path in (self.address, self.backend):
            if path is None:
                continue
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            except OSError as e:  # pragma: no cover
                log.warning("could not remove socket %s: %s", path, e)


def resolve_group(group: str) -> int:
    """A group name or a numeric gid (like go-plugin's PLUGIN_UNIX_SOCKET_GROUP)."""
    if grp is not None:
        try:
            return grp.getgrnam(group).gr_gid
        except KeyError:
            pass
    try:
        return int(group, 10)
    except ValueError:
        raise ListenError(f"PLUGIN_UNIX_SOCKET_GROUP: unknown group {group!r}") from None


def socket_dir_from_env(environ=None) -> str:
    env = os.environ if environ is None else environ
    return env.get("PLUGIN_UNIX_SOCKET_DIR") or env.get("TMPDIR") or "/tmp"


def new_socket_path(directory: str) -> str:
    """A fresh, unused path ``<directory>/plugin<random>`` (created, then removed, like Go)."""
    fd, path = tempfile.mkstemp(prefix="plugin", dir=directory)
    os.close(fd)
    os.unlink(path)
    if len(os.fsencode(path)) > _MAX_UNIX_PATH:
        raise ListenError(f"unix socket path too long ({len(path)} bytes): {path}; "
                          "set PLUGIN_UNIX_SOCKET_DIR or TMPDIR to a shorter directory")
    return path


def _add_port(server: grpc.Server, target: str, creds: Optional[grpc.ServerCredentials]) -> int:
    try:
        if creds is None:
            return server.add_insecure_port(target)
        return server.add_secure_port(target, creds)
    except RuntimeError:
        return 0


def create_listener(server: grpc.Server, tls: Optional[TLSConfig] = None, *,
                    socket_dir: Optional[str] = None, socket_group: Optional[str] = None,
                    environ=None) -> Listener:
    """Bind ``server`` (not yet started) to a new socket; returns where it listens.

    Call ``after_start()`` on the result once the server started, ``cleanup()`` when it stopped.
    """
    env = os.environ if environ is None else environ
    creds = tls.server_credentials() if tls is not None and tls.engine == "grpc" else None
    if hasattr(socket, "AF_UNIX"):
        directory = socket_dir or socket_dir_from_env(env)
        group = socket_group if socket_group is not None else env.get("PLUGIN_UNIX_SOCKET_GROUP")
        if group:
            resolve_group(group)  # fail before binding
        path = new_socket_path(directory)
        if tls is not None and tls.engine == "openssl":
            backend = new_socket_path(tls.private_dir(directory))
            if not _add_port(server, "unix:" + backend, None):
                raise ListenError(f"cannot listen on unix socket {backend}")
            return Listener("unix", path, group=group or None, backend=backend, tls=tls)
        if not _add_port(server, "unix:" + path, creds):
            raise ListenError(f"cannot listen on unix socket {path}")
        return Listener("unix", path, group=group or None)

    if tls is not None and tls.engine == "openssl":
        raise ListenError("the OpenSSL TLS engine needs Unix sockets; set TRIBUTARY_MTLS_ENGINE=grpc")
    min_port = int(env.get("PLUGIN_MIN_PORT") or 0)
    max_port = int(env.get("PLUGIN_MAX_PORT") or 0)
    if min_port == 0 and max_port == 0:
        port = _add_port(server, "127.0.0.1:0", creds)
        if port:
            return Listener("tcp", f"127.0.0.1:{port}")
    else:
        for candidate in range(min_port, max_port + 1):
            if _add_port(server, f"127.0.0.1:{candidate}", creds):
                return Listener("tcp", f"127.0.0.1:{candidate}")
    raise ListenError(f"couldn't bind plugin TCP listener in {min_port}..{max_port}")
