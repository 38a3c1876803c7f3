import threading
import time

import grpc
import pytest

from tributary_connector import CleanError, DataObject, UpsertError
from tributary_connector._proto import connector_pb2
from tributary_connector._proto.plugin import grpc_broker_pb2
from tributary_connector.broker import Broker, BrokerError
from tributary_connector.connector import Callback, go_code_name, to_proto_object


def test_data_object_to_proto():
    p = DataObject("id-1", "name", "uri://x", {"b": 1, "a": "é"}).to_proto()
    assert (p.remote_id, p.resource_name, p.uri) == ("id-1", "name", "uri://x")
    assert p.metadata == '{"b":1,"a":"é"}'
    assert DataObject("x", metadata=None).to_proto().metadata == ""
    assert DataObject(7).to_proto().remote_id == "7"
    with pytest.raises(TypeError):
        DataObject(["x"]).to_proto()


def test_object_like_inputs():
    assert to_proto_object({"remote_id": "a", "uri": "u"}).uri == "u"
    raw = connector_pb2.DataObject(remote_id="r")
    assert to_proto_object(raw) is raw
    with pytest.raises(TypeError, match="unknown DataObject field"):
        to_proto_object({"remote_id": "a", "colour": "red"})
    with pytest.raises(TypeError, match="remote_id"):
        to_proto_object({"uri": "u"})
    with pytest.raises(TypeError):
        to_proto_object(42)


def test_go_code_names():
    assert go_code_name(grpc.StatusCode.RESOURCE_EXHAUSTED) == "ResourceExhausted"
    assert go_code_name(grpc.StatusCode.OK) == "OK"
    assert go_code_name(grpc.StatusCode.UNAVAILABLE) == "Unavailable"


def test_error_texts_read_like_go():
    e = UpsertError("database is down", grpc.StatusCode.UNAVAILABLE)
    assert str(e) == "upsert failed: rpc error: code = Unavailable desc = database is down"
    assert e.code == grpc.StatusCode.UNAVAILABLE and e.details == "database is down"
    assert str(CleanError("no")) == "clean failed: no"


def test_broker_waits_for_late_conn_info():
    b = Broker()
    info = grpc_broker_pb2.ConnInfo(service_id=4, network="unix", address="/tmp/x")
    threading.Timer(0.2, b._store, args=(info,)).start()
    t = time.monotonic()
    got = b.wait_conn_info(4, timeout=5)
    assert got == info and 0.15 < time.monotonic() - t < 4
    # single use
    with pytest.raises(BrokerError, match="timeout waiting for connection info for broker id 4"):
        b.wait_conn_info(4, timeout=0.1)


def test_broker_ignores_knocks_and_keeps_ids_apart():
    b = Broker()
    b._store(grpc_broker_pb2.ConnInfo(service_id=1, knock=grpc_broker_pb2.ConnInfo.Knock(knock=True)))
    b._store(grpc_broker_pb2.ConnInfo(service_id=2, network="unix", address="/b"))
    with pytest.raises(BrokerError):
        b.wait_conn_info(1, timeout=0.05)
    assert b.wait_conn_info(2, timeout=0.05).address == "/b"


def test_callback_without_conn_info_fails_the_upsert():
    cb = Callback(Broker(), 9, dial_timeout=0.05)
    with pytest.raises(UpsertError, match="^upsert failed: timeout waiting for connection info"):
        cb.upsert([DataObject("a")])
    cb._sync_returned()
    with pytest.raises(UpsertError, match="Sync has already returned"):
        cb.upsert([DataObject("a")])


class _AbortCalled(Exception):
    pass


class _FakeContext:
    def __init__(self):
        self.aborted = None

    def is_active(self):
        return True

    def abort(self, code, details):
        self.aborted = (code, details)
        raise _AbortCalled()


def _sync_failure(exc):
    from tributary_connector import Connector
    from tributary_connector.server import ConnectorService

    class Failing(Connector):
        def sync(self, options, callback):
            raise exc()

    context = _FakeContext()
    service = ConnectorService(Failing(), Broker(), dial_timeout=0.05)
    with pytest.raises(_AbortCalled):
        service.Sync(connector_pb2.SyncRequest(options="{}", callback_handler_server=3), context)
    return context.aborted


@pytest.mark.parametrize("code", [grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.ABORTED,
                                  grpc.StatusCode.UNAVAILABLE])
def test_failed_upsert_keeps_the_hosts_status_code(code):
    def upsert_error():
        return UpsertError("page refused", code)

    got_code, details = _sync_failure(upsert_error)
    assert got_code == code
    assert details == str(upsert_error())

    def wrapped():  # raised `from` the host's error, like Go's %w
        try:
            raise upsert_error()
        except UpsertError as e:
            try:
                raise RuntimeError("page 2: " + str(e)) from e
            except RuntimeError as wrapped_error:
                return wrapped_error

    assert _sync_failure(wrapped)[0] == code


def test_plain_exception_and_unreached_host_are_unknown():
    assert _sync_failure(lambda: ValueError("bad options")) == (grpc.StatusCode.UNKNOWN,
                                                                "bad options")
    assert _sync_failure(lambda: UpsertError("timeout waiting for connection info"))[0] == \
        grpc.StatusCode.UNKNOWN
