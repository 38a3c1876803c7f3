"""In-process TLS termination with Python's ``ssl`` (OpenSSL), for AutoMTLS peers grpcio rejects.

grpcio is built on BoringSSL, whose TLS 1.3 signature-algorithm list has no
``ecdsa_secp521r1_sha512``. go-plugin hosts always use an ECDSA **P-521** certificate, so with
grpcio's own TLS (measured with grpcio 1.85.1 against Go 1.26 crypto/tls):

* serving: the CertificateRequest does not offer a P-521 algorithm, the Go host sends no client
  certificate and the handshake fails (``PEER_DID_NOT_RETURN_A_CERTIFICATE``);
* dialing a Go host's broker server: the ClientHello offers no P-521 algorithm and the Go server
  aborts ("peer doesn't support any of the certificate's signature algorithms").

OpenSSL has no such gap, so for such hosts the SDK keeps gRPC in plaintext on private Unix sockets
and terminates TLS here: a TLS server on the public socket piping to the plaintext gRPC server, and
for broker dials a private plaintext socket piping to a TLS client connection to the host. All
connections share one event-loop thread.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
import threading
from typing import Optional, Tuple

log = logging.getLogger("tributary_connector.tlsproxy")

_CHUNK = 256 * 1024
HANDSHAKE_TIMEOUT = 15.0


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            data = await reader.read(_CHUNK)
            if not data:
                break
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError, ssl.SSLError, asyncio.IncompleteReadError):
        pass
    finally:
        # HTTP/2 has no use for half-closed connections: one side ending ends both.
        writer.close()


async def _splice(a: Tuple[asyncio.StreamReader, asyncio.StreamWriter],
                  b: Tuple[asyncio.StreamReader, asyncio.StreamWriter]) -> None:
    await asyncio.gather(_pipe(a[0], b[1]), _pipe(b[0], a[1]), return_exceptions=True)


class TLSProxy:
    """Owns the event-loop thread and the proxy servers."""

    def __init__(self):
        # asyncio logs "Using selector: ..." at debug when a loop is created: not worth a line.
        asyncio_log = logging.getLogger("asyncio")
        previous = asyncio_log.level
        asyncio_log.setLevel(logging.INFO)
        try:
            self._loop = asyncio.new_event_loop()
        finally:
            asyncio_log.setLevel(previous)
        self._loop.set_exception_handler(self._on_loop_error)
        self._servers = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop.run_forever, name="tls-proxy", daemon=True)
        self._thread.start()

    @staticmethod
    def _on_loop_error(loop, context) -> None:
        exc = context.get("exception")
        log.debug("tls proxy: %s", context.get("message", "error"),
                  extra={"error": repr(exc)} if exc else {})

    def _run(self, coro, timeout: Optional[float] = 30.0):
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def serve_tls(self, public_path: str, backend_path: str, context: ssl.SSLContext) -> None:
        """TLS on ``public_path`` (Unix socket), plaintext to ``backend_path``."""

        async def handle(reader, writer):
            try:
                backend = await asyncio.open_unix_connection(backend_path)
            except OSError as e:
                log.warning("tls proxy: backend unreachable", extra={"error": str(e)})
                writer.close()
                return
            await _splice((reader, writer), backend)

        async def start():
            return await asyncio.start_unix_server(
                handle, path=public_path, ssl=context, ssl_handshake_timeout=HANDSHAKE_TIMEOUT,
                limit=_CHUNK)

        server = self._run(start())
        with self._lock:
            self._servers.append(server)

    def serve_plain_to_tls(self, local_path: str, network: str, address: str,
                           context: ssl.SSLContext, server_hostname: str):
        """Plaintext on ``local_path``, TLS client connections to ``network``/``address``.

        Returns a handle for ``stop()``."""

        async def handle(reader, writer):
            try:
                if network == "unix":
                    upstream = await asyncio.open_unix_connection(
                        address, ssl=context, server_hostname=server_hostname,
                        ssl_handshake_timeout=HANDSHAKE_TIMEOUT, limit=_CHUNK)
                else:
                    host, _, port = address.rpartition(":")
                    upstream = await asyncio.open_connection(
                        host.strip("[]"), int(port), ssl=context, server_hostname=server_hostname,
                        ssl_handshake_timeout=HANDSHAKE_TIMEOUT, limit=_CHUNK)
            except (OSError, ssl.SSLError, asyncio.TimeoutError, ValueError) as e:
                log.warning("tls proxy: cannot reach the host's broker service",
                            extra={"address": address, "error": str(e)})
                writer.close()
                return
            await _splice((reader, writer), upstream)

        async def start():
            return await asyncio.start_unix_server(handle, path=local_path, limit=_CHUNK)

        server = self._run(start())
        with self._lock:
            self._servers.append(server)
        return server

    def stop(self, server) -> None:
        with self._lock:
            if server in self._servers:
                self._servers.remove(server)
        if self._loop.is_closed():
            return

        async def close():
            server.close()

        try:
            self._run(close(), timeout=2.0)
        except Exception:  # pragma: no cover - shutting down anyway
            pass

    def close(self) -> None:
        with self._lock:
            servers, self._servers = self._servers, []

        async def close_all():
            for s in servers:
                s.close()

        if self._loop.is_running():
            try:
                self._run(close_all(), timeout=2.0)
            except Exception:  # pragma: no cover
                pass
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(2.0)


def cert_file_path(pem: bytes, directory: str, name: str) -> Tuple[str, Optional[int]]:
    """A path OpenSSL can read ``pem`` from (ssl.load_cert_chain only takes paths).

    Linux: an anonymous memory file (never on disk), as ``/proc/self/fd/N``; elsewhere a 0600 file
    in the private directory. Returns (path, fd to close after loading or None)."""
    if hasattr(os, "memfd_create") and os.path.isdir("/proc/self/fd"):
        fd = os.memfd_create(name, getattr(os, "MFD_CLOEXEC", 0))
        os.write(fd, pem)
        os.lseek(fd, 0, os.SEEK_SET)
        return f"/proc/self/fd/{fd}", fd
    path = os.path.join(directory, name)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, pem)
    finally:
        os.close(fd)
    return path, None
