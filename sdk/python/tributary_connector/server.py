"""``serve()``: run a connector as a go-plugin gRPC plugin (the plugin side of go-plugin).

Start-up, in go-plugin's order: magic cookie check -> app protocol version negotiation ->
AutoMTLS set-up (if ``PLUGIN_CLIENT_CERT``) -> gRPC server on a Unix socket with the connector,
health, broker, controller and stdio services -> handshake line on stdout, then fd 1 is pointed at
fd 2 so nothing else ever reaches the host's stdout pipe -> serve until the host's
``GRPCController.Shutdown`` (or SIGTERM, or the host process disappearing) -> exit 0.
"""

from __future__ import annotations

import json
import logging
import os
import select
import signal
import stat
import sys
import threading
import time
from concurrent import futures
from typing import Any, Callable, Mapping, NoReturn, Optional, Union

import grpc

from . import hclog
from ._proto import connector_pb2, connector_pb2_grpc
from ._proto.grpc.health.v1 import health_pb2, health_pb2_grpc
from ._proto.plugin import (grpc_broker_pb2_grpc, grpc_controller_pb2, grpc_controller_pb2_grpc,
                            grpc_stdio_pb2_grpc)
from .broker import DEFAULT_DIAL_TIMEOUT, Broker
from .connector import Callback, CallbackError, Connector
from .handshake import (DEFAULT_HANDSHAKE, HandshakeConfig, exit_on_cookie_mismatch,
                        format_handshake_line, negotiate_version, parse_protocol_versions)
from .mtls import MTLSError, TLSConfig
from .transport import ListenError, create_listener

log = logging.getLogger("tributary_connector")

#: Receive limit of the plugin's gRPC server (go-plugin keeps grpc-go's 4 MiB; hosts send more).
DEFAULT_MAX_RECEIVE_MESSAGE_BYTES = 64 * 1024 * 1024
#: Health service names reported SERVING (go-plugin: "plugin"; "" is the server as a whole).
HEALTH_SERVICES = ("plugin", "")


def _metadata_text(result: Any) -> str:
    if result is None:
        return ""
    if isinstance(result, str):
        return result
    if isinstance(result, (bytes, bytearray)):
        return bytes(result).decode("utf-8")
    return json.dumps(result, separators=(",", ":"), ensure_ascii=False)


def _sync_error_code(error: BaseException) -> grpc.StatusCode:
    """The gRPC code a failed Sync reports: the host's own status when the failure is (or was raised
    ``from``) a failed callback call (RESOURCE_EXHAUSTED, ABORTED, UNAVAILABLE, ...), as the Go and
    C++ SDKs do; UNKNOWN for the connector's plain exceptions."""
    seen = set()
    e: Optional[BaseException] = error
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, CallbackError):
            if e.code is not None and e.code != grpc.StatusCode.OK:
                return e.code
            break
        e = e.__cause__
    return grpc.StatusCode.UNKNOWN


class _Streams:
    """Per-call wake-up events of the long-lived streams, so that shutdown ends them at once."""

    def __init__(self):
        self._lock = threading.Lock()
        self._events: set = set()
        self.stopping = False

    def new(self, context) -> threading.Event:
        ev = threading.Event()
        if not context.add_callback(ev.set):
            ev.set()  # the call already ended
        with self._lock:
            self._events.add(ev)
            if self.stopping:
                ev.set()
        return ev

    def drop(self, ev: threading.Event) -> None:
        with self._lock:
            self._events.discard(ev)

    def stop_all(self) -> None:
        with self._lock:
            self.stopping = True
            for ev in self._events:
                ev.set()


class ConnectorService(connector_pb2_grpc.ConnectorServicer):
    def __init__(self, connector: Connector, broker: Broker, dial_timeout: float):
        self._connector = connector
        self._broker = broker
        self._dial_timeout = dial_timeout

    def Sync(self, request, context):
        started = time.monotonic()
        callback = Callback(self._broker, request.callback_handler_server, context=context,
                            dial_timeout=self._dial_timeout)
        log.debug("sync started", extra={"callback_id": request.callback_handler_server})
        error: Optional[str] = None
        code = grpc.StatusCode.UNKNOWN
        metadata = ""
        try:
            metadata = _metadata_text(self._connector.sync(request.options, callback))
        except CallbackError as e:
            error = str(e)
            code = _sync_error_code(e)
        except Exception as e:  # the connector's own failure: its text becomes the gRPC error
            error = str(e) or type(e).__name__
            code = _sync_error_code(e)
            log.debug("sync raised", exc_info=True)
        finally:
            callback._sync_returned()
        fields = {"pages": callback.pages_sent, "objects": callback.objects_sent,
                  "seconds": round(time.monotonic() - started, 3)}
        if error is not None:
            log.error("sync failed", extra=dict(fields, error=error, code=code.name))
            context.abort(code, error)
        log.info("sync finished", extra=fields)
        return connector_pb2.EndSync(metadata=metadata)


class HealthService(health_pb2_grpc.HealthServicer):
    def Check(self, request, context):
        if request.service in HEALTH_SERVICES:
            return health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)
        context.abort(grpc.StatusCode.NOT_FOUND, "unknown service")


class ControllerService(grpc_controller_pb2_grpc.GRPCControllerServicer):
    def __init__(self, on_shutdown: Callable[[], None]):
        self._on_shutdown = on_shutdown

    def Shutdown(self, request, context):
        log.debug("shutdown requested by the host")
        self._on_shutdown()  # only sets an event: the reply goes out before the server stops
        return grpc_controller_pb2.Empty()


class StdioService(grpc_stdio_pb2_grpc.GRPCStdioServicer):
    """Held open until the host cancels it or the plugin stops. Nothing is forwarded: after the
    handshake fd 1 is fd 2, so all output of the plugin is on stderr."""

    def __init__(self, streams: _Streams):
        self._streams = streams

    def StreamStdio(self, request, context):
        ev = self._streams.new(context)
        try:
            context.send_initial_metadata(())
            ev.wait()
        finally:
            self._streams.drop(ev)
        return
        yield  # pragma: no cover - makes this a (response-streaming) generator


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _redirect_stdout_to_stderr() -> None:
    """After the handshake nothing may reach the host's stdout pipe: make fd 1 a copy of fd 2."""
    try:
        if sys.stdout is not None:
            sys.stdout.flush()
    except Exception:
        pass
    try:
        os.dup2(2, 1)
    except OSError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.close(devnull)


def _host_watch() -> Callable[[], bool]:
    """A check for "the host died without Shutdown" (go-plugin plugins die of SIGPIPE then).

    Two signs: our parent changed (we were re-parented), or the read end of our stderr pipe - held
    by the host - was closed (POLLERR on the write end; works through a ``sh -c`` wrapper too).
    """
    parent = os.getppid()
    poller = None
    try:
        if stat.S_ISFIFO(os.fstat(2).st_mode):
            poller = select.poll()
            poller.register(2, 0)  # POLLERR/POLLHUP are always reported
    except (OSError, AttributeError):
        poller = None

    def gone() -> bool:
        if parent != 1 and os.getppid() != parent:
            return True
        if poller is not None:
            try:
                return any(ev & (select.POLLERR | select.POLLHUP) for _, ev in poller.poll(0))
            except OSError:
                return False
        return False

    return gone


def _cleanup(server: grpc.Server, listener, tls: Optional[TLSConfig], grace: Optional[float] = None) -> None:
    server.stop(grace).wait(2.0)
    if listener is not None:
        listener.cleanup()
    if tls is not None:
        tls.close()


def _fatal(message: str, **fields) -> NoReturn:
    log.error(message, extra=fields)
    _flush_and_exit(1)


def _flush_and_exit(code: int) -> NoReturn:
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except Exception:
            pass
    logging.shutdown()
    os._exit(code)


def serve(connector: Union[Connector, Mapping[int, Connector]], *,
          handshake: HandshakeConfig = DEFAULT_HANDSHAKE,
          max_receive_message_bytes: int = DEFAULT_MAX_RECEIVE_MESSAGE_BYTES,
          max_workers: int = 32,
          dial_timeout: float = DEFAULT_DIAL_TIMEOUT,
          log_level: Optional[Union[int, str]] = None,
          configure_logging: bool = True,
          register: Optional[Callable[[grpc.Server, Broker], None]] = None) -> NoReturn:
    """Serve ``connector`` to the go-plugin host that started this process. Never returns.

    * ``connector``: a Connector, or ``{app_protocol_version: Connector}`` to support several
      versions (the host's ``PLUGIN_PROTOCOL_VERSIONS`` picks one, like go-plugin's
      VersionedPlugins); with a single Connector the version is ``handshake.protocol_version``.
    * ``handshake``: the magic cookie and version (default ``BASIC_PLUGIN=hello``, version 1).
    * ``max_receive_message_bytes``: largest request the plugin accepts (default 64 MiB).
    * ``dial_timeout``: how long a Callback waits for the host's broker connection info.
    * ``log_level``: trace/debug/info/warn/error or a logging level; default
      ``$TRIBUTARY_LOG_LEVEL`` or debug. ``configure_logging=False`` leaves logging alone.
    * ``register(server, broker)``: add more gRPC services to the plugin's server.

    Must be called from the main thread (signal handling).
    """
    environ = os.environ
    exit_on_cookie_mismatch(handshake, environ)

    if configure_logging:
        level = hclog.parse_level(log_level) if isinstance(log_level, str) else log_level
        hclog.configure(level)

    impls = dict(connector) if isinstance(connector, Mapping) else {handshake.protocol_version: connector}
    host_versions, invalid = parse_protocol_versions(environ.get("PLUGIN_PROTOCOL_VERSIONS"))
    for item in invalid:
        log.warning("server sent invalid plugin version", extra={"version": item})
    version = negotiate_version(impls.keys(), host_versions)
    impl = impls[version]
    if not host_versions or version not in host_versions:
        log.warning("no protocol version in common with the host; offering our lowest",
                    extra={"host_versions": host_versions, "version": version})

    if environ.get("PLUGIN_MULTIPLEX_GRPC"):
        log.warning("the host asked for gRPC broker multiplexing (PLUGIN_MULTIPLEX_GRPC), which this "
                    "SDK does not implement; serving without it (go-plugin v1.6+ hosts that require "
                    "it will refuse the plugin)")

    try:
        tls = TLSConfig.from_env(environ)
    except MTLSError as e:
        _fatal("AutoMTLS set-up failed", error=str(e))

    stop = threading.Event()
    exit_signal = []
    streams = _Streams()
    options = (
        ("grpc.max_receive_message_length", int(max_receive_message_bytes)),
        ("grpc.max_send_message_length", -1),
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_workers,
                                                    thread_name_prefix="plugin-rpc"),
                         options=options)
    broker = Broker(tls, server_options=options)
    connector_pb2_grpc.add_ConnectorServicer_to_server(
        ConnectorService(impl, broker, dial_timeout), server)
    health_pb2_grpc.add_HealthServicer_to_server(HealthService(), server)
    grpc_broker_pb2_grpc.add_GRPCBrokerServicer_to_server(broker, server)
    grpc_controller_pb2_grpc.add_GRPCControllerServicer_to_server(ControllerService(stop.set), server)
    grpc_stdio_pb2_grpc.add_GRPCStdioServicer_to_server(StdioService(streams), server)
    if register is not None:
        register(server, broker)

    listener = None
    try:
        listener = create_listener(server, tls)
        server.start()
        listener.after_start()
    except (ListenError, OSError) as e:
        _cleanup(server, listener, tls)
        _fatal("cannot listen", error=str(e))

    in_main_thread = threading.current_thread() is threading.main_thread()
    if in_main_thread:
        def on_sigint(signum, frame):
            log.info("plugin received interrupt signal, ignoring")

        def on_sigterm(signum, frame):
            exit_signal.append(signum)
            stop.set()

        signal.signal(signal.SIGINT, on_sigint)
        signal.signal(signal.SIGTERM, on_sigterm)
    else:
        log.warning("serve() not called from the main thread: SIGINT/SIGTERM are not handled")

    log.debug("plugin address", extra=dict(
        {"network": listener.network, "address": listener.address, "version": version,
         "tls": tls is not None}, **(tls.describe() if tls else {})))
    line = format_handshake_line(version, listener.network, listener.address,
                                 tls.own.cert_der if tls else None)
    try:
        if sys.stdout is not None:
            sys.stdout.flush()  # whatever was printed before goes first (and breaks the handshake)
        _write_all(1, line.encode("ascii"))
    except OSError as e:
        _cleanup(server, listener, tls)
        _fatal("cannot write the handshake to stdout", error=str(e))
    _redirect_stdout_to_stderr()

    host_gone = _host_watch()
    while not stop.wait(1.0):
        if host_gone():
            log.warning("the host process is gone; exiting")
            break

    # Shutdown: end our own long-lived streams, then stop the server (a short grace lets the
    # Shutdown reply go out; a Sync still running is cancelled), remove the socket, exit.
    log.debug("plugin shutting down")
    streams.stop_all()
    broker.close(0)
    _cleanup(server, listener, tls, grace=0.25)
    closer = threading.Thread(target=impl.close, name="connector-close", daemon=True)
    closer.start()
    closer.join(1.0)
    if exit_signal:
        logging.shutdown()
        signal.signal(exit_signal[0], signal.SIG_DFL)
        os.kill(os.getpid(), exit_signal[0])
    _flush_and_exit(0)
