#!/usr/bin/env python3
"""The test connector of tests/connectors/README.md, written with the Python SDK (label `python`).

Run by the plugin-host tests as `<venv>/bin/python test_connector.py`; the behaviour is chosen with
TEST_CONNECTOR_MODE and the Sync options (see the README, which is the contract). Every mode of the
contract is implemented except `invalid_utf8` (C++ only: Python strings cannot hold invalid UTF-8).
"""

import json
import os
import sys
import threading
import time

import grpc

from tributary_connector import Connector, UpsertError, connector_pb2, serve
from tributary_connector.connector import to_proto_object

LABEL = "python"
# Modes handled inside Sync (text_before_handshake acts before the handshake, then is normal).
SYNC_MODES = {
    "normal", "text_before_handshake", "crash_mid_sync", "hang_in_sync", "sync_error",
    "oversized_page", "flood_output", "bad_hclog", "upsert_after_return", "never_dial",
    "ignore_upsert_errors", "clean", "legacy_callback_method",
}
FLOOD_BYTES = 16 * 1024 * 1024


MAX_BYTES = 1 << 30  # bounds object_bytes / oversize_bytes so a typo cannot exhaust memory
LIMITS = {"pages": 2**31 - 1, "page_size": 10_000_000, "object_bytes": MAX_BYTES,
          "oversize_bytes": MAX_BYTES, "revision": 2**31 - 1}
# revision > 0: one object in a hundred (index % 100 == 0) carries "rev":R in its metadata.
DEFAULTS = {"pages": 3, "page_size": 10, "object_bytes": 0, "oversize_bytes": 8 << 20,
            "revision": 0}


def parse_options(text):
    opts = dict(DEFAULTS)
    if not text or not text.strip():
        return opts
    try:
        raw = json.loads(text)
    except ValueError as e:
        raise ValueError(f"invalid options: {e}") from None
    if not isinstance(raw, dict):
        raise ValueError("invalid options: not a JSON object")
    for key, limit in LIMITS.items():
        if key not in raw:
            continue
        value = raw[key]
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= limit:
            raise ValueError(f"invalid options: {key} must be between 0 and {limit}, got {value!r}")
        opts[key] = value
    return opts


def _obj(page, index, metadata):
    return connector_pb2.DataObject(remote_id=f"obj-{page}-{index}",
                                    resource_name=f"resource {index}",
                                    uri=f"test://{page}/{index}", metadata=metadata)


def _pad(obj, head, size, target):
    """Set obj.metadata to head + ',"pad":"x..."}' so that size() is about target; keep it
    unpadded when even an empty pad is too big."""
    unpadded = obj.metadata
    prefix = head + ',"pad":"'

    def set_pad(n):
        obj.metadata = prefix + "x" * n + '"}'

    n = 0
    set_pad(n)
    for _ in range(4):  # only varint length prefixes can make a step overshoot
        nxt = max(0, n + target - size())
        if nxt == n:
            break
        n = nxt
        set_pad(n)
    if n == 0 and size() > target:
        obj.metadata = unpadded


def make_object(page, index, object_bytes=0, revision=0):
    """obj-<page>-<index>; with object_bytes the encoded DataObject is about that size."""
    head = f'{{"page":{page},"index":{index}'
    if revision > 0 and index % 100 == 0:
        head += f',"rev":{revision}'
    obj = _obj(page, index, head + "}")
    if object_bytes > 0:
        _pad(obj, head, obj.ByteSize, object_bytes)
    return obj


def make_page(page, size, object_bytes=0, revision=0):
    return [make_object(page, i, object_bytes, revision) for i in range(size)]


def oversized_page(page, total_bytes):
    """Page `page`: one object obj-<page>-0 padded so that the encoded page is about total_bytes."""
    obj = _obj(page, 0, f'{{"page":{page},"index":0}}')
    msg = connector_pb2.SyncResponse(response=[obj])
    _pad(msg.response[0], f'{{"page":{page},"index":0', msg.ByteSize, total_bytes)
    return list(msg.response)


def write_fd(fd, data):
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def flood(fd, total, tag):
    line = (f"flood {tag} " + "y" * 100 + "\n").encode()
    chunk = line * (65536 // len(line))
    written = 0
    while written < total:
        part = chunk[: total - written]
        write_fd(fd, part)
        written += len(part)


def bad_hclog():
    lines = [
        b'{"@level":"info","@message":123}\n',
        b'{"@level":7,"@message":null,"@timestamp":[]}\n',
        b"{not json\n",
        b"[1,2,3]\n",
        b"z" * (1024 * 1024) + b"\n",
        b'{"@level":"warn","@message":"valid hclog line",'
        b'"@timestamp":"2026-01-02T03:04:05.000000Z","k":"v"}\n',
    ]
    for line in lines:
        write_fd(2, line)


def legacy_callback_method(callback, opts):
    """A connector of an older protocol revision: sends its pages to
    /proto.CallbackHandler/Callback on the SDK's callback channel, ignores the errors and reports
    success (the host must not count that as a successful listing)."""
    callback._get_stub(UpsertError)  # dials the broker
    call = callback._channel.unary_unary(
        "/proto.CallbackHandler/Callback",
        request_serializer=connector_pb2.SyncResponse.SerializeToString,
        response_deserializer=connector_pb2.Empty.FromString)
    refused = 0
    for page in range(opts["pages"]):
        objects = [to_proto_object(o) for o in make_page(page, opts["page_size"], 0)]
        try:
            call(connector_pb2.SyncResponse(response=objects), timeout=30)
        except grpc.RpcError as e:
            refused += 1
            sys.stderr.write(f"test connector: ignoring callback error: {e.details()}\n")
    return {"pages": opts["pages"], "refused": refused, "connector": LABEL}


class TestConnector(Connector):
    def __init__(self, mode):
        self.mode = mode

    def sync(self, options, callback):
        mode = self.mode
        if mode not in SYNC_MODES:
            raise ValueError(f"test connector: unsupported TEST_CONNECTOR_MODE {mode!r}")
        opts = parse_options(options)
        if mode == "sync_error":
            raise RuntimeError("upstream said no")
        if mode == "never_dial":
            return {"pages": 0, "objects": 0, "connector": LABEL}
        if mode == "flood_output":
            flood(1, FLOOD_BYTES, "stdout")
            flood(2, FLOOD_BYTES, "stderr")
        if mode == "bad_hclog":
            bad_hclog()

        if mode == "legacy_callback_method":
            return legacy_callback_method(callback, opts)

        pages = objects = 0

        def send(page_objects):
            nonlocal pages, objects
            try:
                callback.upsert(page_objects)  # returns once the host acknowledged the page
            except UpsertError:
                if mode == "ignore_upsert_errors":
                    return  # c1's S3 connector: the page is silently lost
                raise  # text: "upsert failed: rpc error: code = ... desc = ..."
            pages += 1
            objects += len(page_objects)
            if pages == 1 and mode == "crash_mid_sync":
                os._exit(2)
            if pages == 1 and mode == "hang_in_sync":
                threading.Event().wait()

        # In mode oversized_page the oversized page is page 0 and the normal pages are 1..pages.
        first = 0
        if mode == "oversized_page":
            send(oversized_page(0, opts["oversize_bytes"]))
            first = 1
        for page in range(first, first + opts["pages"]):
            send(make_page(page, opts["page_size"], opts["object_bytes"], opts["revision"]))

        if mode == "clean":
            callback.clean()

        if mode == "upsert_after_return":
            late = callback.detach()  # keep the connection after Sync returned
            late_page = make_page(first + opts["pages"], opts["page_size"], opts["object_bytes"])

            def upsert_late():
                time.sleep(0.3)
                try:
                    late.upsert(late_page, timeout=5)  # must not be stored
                except Exception:
                    pass  # expected: the host no longer serves this callback
                finally:
                    late.close()

            threading.Thread(target=upsert_late, name="upsert-after-return", daemon=True).start()

        return {"pages": pages, "objects": objects, "connector": LABEL}


def main():
    # An unsupported mode (e.g. invalid_utf8, C++ only) fails each Sync, like the Go connector.
    mode = os.environ.get("TEST_CONNECTOR_MODE") or "normal"
    if mode == "exit_before_handshake":
        sys.stderr.write("test connector: exiting before handshake\n")
        sys.stderr.flush()
        sys.exit(3)
    if mode == "never_handshake":
        while True:
            time.sleep(3600)
    if mode == "text_before_handshake":
        print("hello from the connector", flush=True)
    serve(TestConnector(mode))


if __name__ == "__main__":
    main()
