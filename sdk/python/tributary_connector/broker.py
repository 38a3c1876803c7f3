"""go-plugin's gRPC broker, plugin side (non-multiplexed).

The host opens one ``plugin.GRPCBroker/StartStream`` bidi stream right after connecting. It sends
``ConnInfo{service_id, network, address}`` for every service it offers (e.g. c1's CallbackHandler,
whose id travels in ``SyncRequest.callback_handler_server``), usually *concurrently* with the RPC
that carries the id. ``Broker.dial(id)`` therefore waits (10 s by default; Go waits 5 s) for the
ConnInfo, then opens a new channel to that address with the same TLS settings as the main server.

``Broker.accept_and_serve(id, register)`` is the other direction: the plugin offers a service on a
new socket and announces it on the stream.
"""

from __future__ import annotations

import collections
import logging
import os
import queue
import threading
import time
from concurrent import futures
from typing import Callable, Deque, Dict, List, Optional, Tuple

import grpc

from ._proto.plugin import grpc_broker_pb2, grpc_broker_pb2_grpc
from .mtls import TLS_SERVER_NAME, TLSConfig
from .transport import Listener, create_listener, new_socket_path, socket_dir_from_env

log = logging.getLogger("tributary_connector.broker")

#: How long dial() waits for the host's ConnInfo by default (go-plugin waits 5 s).
DEFAULT_DIAL_TIMEOUT = 10.0
#: ConnInfos nobody dialed are dropped after this long (go-plugin: 5 s; we are more lenient).
CONN_INFO_TTL = 60.0

# Call options go-plugin puts on every brokered connection: no message size limit either way.
UNLIMITED_MESSAGES = (
    ("grpc.max_send_message_length", -1),
    ("grpc.max_receive_message_length", -1),
)


class BrokerError(Exception):
    pass


class _ClosingChannel(grpc.Channel):
    """A channel that also releases a resource (the TLS proxy's socket) when closed."""

    def __init__(self, channel: grpc.Channel, release: Callable[[], None]):
        self._channel = channel
        self._release = release
        self._released = False

    def subscribe(self, callback, try_to_connect=False):
        self._channel.subscribe(callback, try_to_connect)

    def unsubscribe(self, callback):
        self._channel.unsubscribe(callback)

    def unary_unary(self, *args, **kwargs):
        return self._channel.unary_unary(*args, **kwargs)

    def unary_stream(self, *args, **kwargs):
        return self._channel.unary_stream(*args, **kwargs)

    def stream_unary(self, *args, **kwargs):
        return self._channel.stream_unary(*args, **kwargs)

    def stream_stream(self, *args, **kwargs):
        return self._channel.stream_stream(*args, **kwargs)

    def close(self):
        self._channel.close()
        if not self._released:
            self._released = True
            self._release()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc_val, exc_tb):
        self.close()
        return False


class Broker(grpc_broker_pb2_grpc.GRPCBrokerServicer):
    """Stores the host's ConnInfo by id, dials them, and offers plugin services."""

    def __init__(self, tls: Optional[TLSConfig] = None, *, socket_dir: Optional[str] = None,
                 socket_group: Optional[str] = None, server_options: Tuple = ()):
        self._tls = tls
        self._socket_dir = socket_dir
        self._socket_group = socket_group
        self._server_options = tuple(server_options)
        self._cond = threading.Condition()
        self._infos: Dict[int, Deque[Tuple[float, grpc_broker_pb2.ConnInfo]]] = {}
        self._outgoing: "queue.Queue[Optional[grpc_broker_pb2.ConnInfo]]" = queue.Queue()
        self._stream_open = False
        self._stream_seen = False
        self._closed = False
        self._next_id = 0
        self._servers: List[Tuple[grpc.Server, Listener]] = []

    # ---- the StartStream service -------------------------------------------------------------

    def StartStream(self, request_iterator, context):
        with self._cond:
            if self._stream_open:
                log.warning("a second broker stream was opened; it replaces the first")
            self._stream_open = True
            self._stream_seen = True
            self._cond.notify_all()
        done = threading.Event()

        def on_done():
            done.set()
            self._outgoing.put(None)  # wake the writer

        if not context.add_callback(on_done):
            on_done()  # the call already ended
        reader = threading.Thread(target=self._read_stream, args=(request_iterator, done),
                                  name="broker-reader", daemon=True)
        reader.start()
        context.send_initial_metadata(())
        try:
            while not done.is_set() and not self._closed:
                try:
                    msg = self._outgoing.get(timeout=1.0)
                except queue.Empty:
                    continue
                if msg is None:
                    continue
                yield msg
        finally:
            with self._cond:
                self._stream_open = False
                self._cond.notify_all()

    def _read_stream(self, request_iterator, done: threading.Event) -> None:
        try:
            for info in request_iterator:
                self._store(info)
        except grpc.RpcError:
            pass  # cancelled or the host went away
        except Exception:  # pragma: no cover - defensive
            log.exception("broker stream reader failed")
        finally:
            done.set()
            self._outgoing.put(None)

    def _store(self, info: grpc_broker_pb2.ConnInfo) -> None:
        if info.HasField("knock") and (info.knock.knock or info.knock.ack):
            # Multiplexed broker (go-plugin v1.6+) - only used when we advertise it, which we never do.
            log.warning("ignoring a multiplexed-broker knock for id %d (multiplexing is not supported)",
                        info.service_id)
            return
        now = time.monotonic()
        with self._cond:
            # Drop what nobody claimed for too long (a host that offers ids it never uses).
            for sid in list(self._infos):
                entries = self._infos[sid]
                while entries and now - entries[0][0] > CONN_INFO_TTL:
                    entries.popleft()
                if not entries:
                    del self._infos[sid]
            self._infos.setdefault(info.service_id, collections.deque()).append((now, info))
            self._cond.notify_all()
        log.debug("broker: connection info received", extra={
            "id": info.service_id, "network": info.network, "address": info.address})

    # ---- dialing services the host offers ----------------------------------------------------

    def wait_conn_info(self, service_id: int, timeout: float = DEFAULT_DIAL_TIMEOUT) -> grpc_broker_pb2.ConnInfo:
        """Take (single use) the ConnInfo for ``service_id``, waiting up to ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                entries = self._infos.get(service_id)
                if entries:
                    _, info = entries.popleft()
                    if not entries:
                        del self._infos[service_id]
                    return info
                if self._closed:
                    raise BrokerError("broker closed")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    hint = "" if self._stream_seen else " (the host never opened the broker stream)"
                    raise BrokerError(
                        f"timeout waiting for connection info for broker id {service_id}{hint}")
                self._cond.wait(remaining)

    def channel_for(self, info: grpc_broker_pb2.ConnInfo, options: Tuple = ()) -> grpc.Channel:
        if info.network == "unix":
            target = "unix:" + info.address if info.address.startswith("/") else "unix:" + os.path.abspath(info.address)
        elif info.network == "tcp":
            target = info.address
        else:
            raise BrokerError(f"unknown address type {info.network!r} for broker id {info.service_id}")
        opts = list(UNLIMITED_MESSAGES) + list(options)
        if self._tls is None:
            return grpc.insecure_channel(target, options=opts)
        if self._tls.engine == "grpc":
            opts += list(self._tls.channel_options)
            return grpc.secure_channel(target, self._tls.channel_credentials(), options=opts)
        # OpenSSL engine: plaintext gRPC to a private socket, TLS from there to the host.
        local = new_socket_path(self._tls.private_dir(self._socket_dir or socket_dir_from_env()))
        proxy = self._tls.proxy
        handle = proxy.serve_plain_to_tls(local, info.network, info.address,
                                          self._tls.ssl_client_context(), TLS_SERVER_NAME)

        def release():
            proxy.stop(handle)
            try:
                os.unlink(local)
            except OSError:
                pass

        return _ClosingChannel(grpc.insecure_channel("unix:" + local, options=opts), release)

    def dial(self, service_id: int, timeout: float = DEFAULT_DIAL_TIMEOUT, options: Tuple = ()) -> grpc.Channel:
        """Open a channel to the service the host offers under ``service_id``."""
        info = self.wait_conn_info(service_id, timeout)
        log.debug("broker: dialing", extra={"id": service_id, "network": info.network,
                                             "address": info.address})
        return self.channel_for(info, options)

    # ---- offering services to the host -------------------------------------------------------

    def next_id(self) -> int:
        with self._cond:
            self._next_id += 1
            return self._next_id

    def accept_and_serve(self, service_id: int, register: Callable[[grpc.Server], None],
                         max_workers: int = 8) -> grpc.Server:
        """Serve a new gRPC server for ``service_id`` and announce it to the host.

        ``register(server)`` adds the servicers (e.g. ``add_FooServicer_to_server(impl, server)``).
        The server runs until the plugin exits or ``stop()`` is called on it.
        """
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_workers,
                                                        thread_name_prefix=f"broker-{service_id}"),
                             options=self._server_options)
        register(server)
        listener = create_listener(server, self._tls, socket_dir=self._socket_dir,
                                   socket_group=self._socket_group)
        server.start()
        listener.after_start()
        with self._cond:
            self._servers.append((server, listener))
        self._outgoing.put(grpc_broker_pb2.ConnInfo(
            service_id=service_id, network=listener.network, address=listener.address))
        return server

    def close(self, grace: Optional[float] = None) -> None:
        with self._cond:
            self._closed = True
            servers, self._servers = self._servers, []
            self._cond.notify_all()
        self._outgoing.put(None)
        for server, listener in servers:
            server.stop(grace).wait()
            listener.cleanup()
