"""The connector API: what a connector author implements and uses."""

from __future__ import annotations

import dataclasses
import json
import threading
from typing import Any, Iterable, Mapping, Optional, Union

import grpc

from ._proto import connector_pb2, connector_pb2_grpc


class CallbackError(Exception):
    """A call to the host's CallbackHandler failed.

    ``str(error)`` reads like Go's: ``upsert failed: rpc error: code = Unavailable desc = ...``.
    ``code`` is the grpc.StatusCode (None when the call never reached the host, e.g. the host never
    sent the broker connection info), ``details`` the host's message.
    """

    operation = "callback"

    def __init__(self, details: str, code: Optional[grpc.StatusCode] = None):
        self.code = code
        self.details = details
        if code is not None:
            text = f"rpc error: code = {go_code_name(code)} desc = {details}"
        else:
            text = details
        super().__init__(f"{self.operation} failed: {text}")


class UpsertError(CallbackError):
    """The host did not acknowledge a page: it was **not** stored.

    Letting it propagate out of ``Connector.sync`` fails the Sync (the host then does not mark the
    run successful). Catch it only if losing the page is acceptable.
    """

    operation = "upsert"


class CleanError(CallbackError):
    operation = "clean"


def go_code_name(code: grpc.StatusCode) -> str:
    """grpc-go's spelling of a status code (``RESOURCE_EXHAUSTED`` -> ``ResourceExhausted``)."""
    if code == grpc.StatusCode.OK:
        return "OK"
    return "".join(part.capitalize() for part in code.name.split("_"))


def _text(value: Any, field: str) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        raise TypeError(f"DataObject.{field} must be a string, not bool")
    if isinstance(value, int):
        return str(value)
    raise TypeError(f"DataObject.{field} must be a string, not {type(value).__name__}")


@dataclasses.dataclass
class DataObject:
    """One object of a page. ``metadata`` may be a string or any JSON-serialisable value
    (encoded compactly)."""

    remote_id: str
    resource_name: str = ""
    uri: str = ""
    metadata: Any = ""

    def to_proto(self) -> connector_pb2.DataObject:
        md = self.metadata
        if md is None:
            md = ""
        elif not isinstance(md, str):
            md = json.dumps(md, separators=(",", ":"), ensure_ascii=False)
        return connector_pb2.DataObject(
            remote_id=_text(self.remote_id, "remote_id"),
            resource_name=_text(self.resource_name, "resource_name"),
            uri=_text(self.uri, "uri"),
            metadata=md,
        )


ObjectLike = Union[DataObject, Mapping[str, Any], "connector_pb2.DataObject"]
_FIELDS = {f.name for f in dataclasses.fields(DataObject)}


def to_proto_object(obj: ObjectLike) -> connector_pb2.DataObject:
    if isinstance(obj, connector_pb2.DataObject):
        return obj
    if isinstance(obj, DataObject):
        return obj.to_proto()
    if isinstance(obj, Mapping):
        unknown = set(obj) - _FIELDS
        if unknown:
            raise TypeError(f"unknown DataObject field(s): {', '.join(sorted(map(str, unknown)))}")
        if "remote_id" not in obj:
            raise TypeError("a DataObject needs a remote_id")
        return DataObject(**obj).to_proto()
    raise TypeError(f"cannot send {type(obj).__name__} as a DataObject")


class Callback:
    """The host's CallbackHandler for one Sync call.

    The connection to the host is opened lazily, on the first ``upsert``/``clean``: a connector
    that has nothing to send never dials. The SDK closes it when ``sync`` returns, unless
    ``detach()`` was called. Thread-safe.
    """

    def __init__(self, broker, service_id: int, *, context: Optional[grpc.ServicerContext] = None,
                 dial_timeout: float = 10.0):
        self._broker = broker
        self._service_id = service_id
        self._context = context
        self._dial_timeout = dial_timeout
        self._lock = threading.Lock()
        self._channel: Optional[grpc.Channel] = None
        self._stub: Optional[connector_pb2_grpc.CallbackHandlerStub] = None
        self._closed = False
        self._detached = False
        self.pages_sent = 0
        self.objects_sent = 0

    @property
    def service_id(self) -> int:
        """The broker id the host gave in ``SyncRequest.callback_handler_server``."""
        return self._service_id

    def is_cancelled(self) -> bool:
        """True once the host cancelled the Sync call (or its deadline passed)."""
        return self._context is not None and not self._context.is_active()

    def _get_stub(self, error_cls) -> connector_pb2_grpc.CallbackHandlerStub:
        with self._lock:
            if self._closed:
                raise error_cls("the callback is closed: Sync has already returned "
                                "(use Callback.detach() to keep it)")
            if self._stub is None:
                try:
                    self._channel = self._broker.dial(self._service_id, timeout=self._dial_timeout)
                except Exception as e:
                    raise error_cls(str(e)) from e
                self._stub = connector_pb2_grpc.CallbackHandlerStub(self._channel)
            return self._stub

    def upsert(self, objects: Iterable[ObjectLike], *, timeout: Optional[float] = None) -> None:
        """Send one page. Returns once the host acknowledged (= stored) it; raises UpsertError
        otherwise. ``objects``: DataObject instances, dicts with DataObject's fields, or protobuf
        DataObject messages."""
        page = connector_pb2.SyncResponse(response=[to_proto_object(o) for o in objects])
        stub = self._get_stub(UpsertError)
        try:
            stub.Upsert(page, timeout=timeout)
        except grpc.RpcError as e:
            raise UpsertError(e.details() or str(e), e.code()) from None
        with self._lock:
            self.pages_sent += 1
            self.objects_sent += len(page.response)

    def clean(self, *, timeout: Optional[float] = None) -> None:
        """Call the host's ``Clean``. Raises CleanError on failure."""
        stub = self._get_stub(CleanError)
        try:
            stub.Clean(connector_pb2.Empty(), timeout=timeout)
        except grpc.RpcError as e:
            raise CleanError(e.details() or str(e), e.code()) from None

    def detach(self) -> "Callback":
        """Keep this callback usable after ``sync`` returns; the caller must ``close()`` it."""
        with self._lock:
            self._detached = True
        return self

    def close(self) -> None:
        with self._lock:
            self._closed = True
            channel, self._channel, self._stub = self._channel, None, None
        if channel is not None:
            channel.close()

    def _sync_returned(self) -> None:
        with self._lock:
            detached = self._detached
        if not detached:
            self.close()


class Connector:
    """Base class of a connector. Implement ``sync``."""

    def sync(self, options: str, callback: Callback) -> Union[str, Mapping[str, Any], None]:
        """Run one synchronisation.

        ``options`` is the Sync options string (c1: the account's JSON options). Send pages with
        ``callback.upsert([...])``; each call returns once the host stored the page. Return the run
        metadata (a string; a dict/list is JSON-encoded; None means ""). Raising fails the Sync with
        the exception's text.
        """
        raise NotImplementedError

    def close(self) -> None:
        """Called once before the process exits after the host's Shutdown (bounded to ~1 s)."""
