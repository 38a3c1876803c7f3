"""The example connector run as a real subprocess: cookie failure and a small go-plugin host
(plain, AutoMTLS with a P-256 host key -> grpcio TLS, with a go-plugin-like P-521 key -> OpenSSL)."""

import base64
import json
import os
import queue
import signal
import stat
import subprocess
import threading
import time
from concurrent import futures

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from google.protobuf import empty_pb2

from conftest import EXAMPLE, PYTHON
from tributary_connector._proto import connector_pb2, connector_pb2_grpc
from tributary_connector._proto.grpc.health.v1 import health_pb2, health_pb2_grpc
from tributary_connector._proto.plugin import (grpc_broker_pb2, grpc_broker_pb2_grpc,
                                               grpc_controller_pb2, grpc_controller_pb2_grpc,
                                               grpc_stdio_pb2_grpc)
from tributary_connector.handshake import COOKIE_MISMATCH_TEXT
from tributary_connector.mtls import generate_certificate


@pytest.mark.parametrize("cookie", [None, "bye"])
def test_wrong_cookie_exits_1_with_go_plugins_message(cookie):
    env = {k: v for k, v in os.environ.items() if k != "BASIC_PLUGIN"}
    if cookie:
        env["BASIC_PLUGIN"] = cookie
    p = subprocess.run([PYTHON, EXAMPLE], env=env, capture_output=True, timeout=60)
    assert p.returncode == 1
    assert p.stdout == b""
    assert p.stderr.decode() == COOKIE_MISMATCH_TEXT


class Recorder(connector_pb2_grpc.CallbackHandlerServicer):
    def __init__(self):
        self.ids = []
        self.pages = 0

    def Upsert(self, request, context):
        self.pages += 1
        self.ids += [o.remote_id for o in request.response]
        return connector_pb2.Empty()

    def Clean(self, request, context):
        return connector_pb2.Empty()


class Host:
    """Just enough of a go-plugin host (what a Go host does, in Python)."""

    def __init__(self, tmp, host_curve=None, extra_env=None):
        self.tmp = tmp
        env = dict(os.environ, BASIC_PLUGIN="hello", PLUGIN_PROTOCOL_VERSIONS="1",
                   PLUGIN_MIN_PORT="10000", PLUGIN_MAX_PORT="25000", TMPDIR=str(tmp))
        env.pop("PLUGIN_CLIENT_CERT", None)
        env.update(extra_env or {})
        self.cert = generate_certificate(host_curve) if host_curve else None
        if self.cert:
            env["PLUGIN_CLIENT_CERT"] = self.cert.cert_pem.decode()
        self.proc = subprocess.Popen([PYTHON, EXAMPLE], env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE)
        self.line = self.proc.stdout.readline().decode()
        self.stderr = []
        threading.Thread(target=lambda: self.stderr.extend(self.proc.stderr), daemon=True).start()
        threading.Thread(target=lambda: self.proc.stdout.read(), daemon=True).start()
        fields = self.line.rstrip("\n").split("|")
        assert fields[:3] == ["1", "1", "unix"] and fields[4] == "grpc", self.line
        self.path = fields[3]
        opts = [("grpc.max_receive_message_length", -1)]
        if self.cert:
            der = base64.b64decode(fields[5] + "=" * (-len(fields[5]) % 4))
            self.plugin_pem = x509.load_der_x509_certificate(der).public_bytes(
                serialization.Encoding.PEM)
            creds = grpc.ssl_channel_credentials(self.plugin_pem, self.cert.key_pem,
                                                 self.cert.cert_pem)
            self.channel = grpc.secure_channel(
                "unix:" + self.path, creds,
                opts + [("grpc.ssl_target_name_override", "localhost")])
        else:
            assert fields[5] == ""
            self.channel = grpc.insecure_channel("unix:" + self.path, opts)
        self.out = queue.Queue()
        self.broker = grpc_broker_pb2_grpc.GRPCBrokerStub(self.channel).StartStream(
            iter(self.out.get, None))
        self.stdio = grpc_stdio_pb2_grpc.GRPCStdioStub(self.channel).StreamStdio(empty_pb2.Empty())

    def sync(self, options, service_id=1):
        rec = Recorder()
        server = grpc.server(futures.ThreadPoolExecutor(4))
        connector_pb2_grpc.add_CallbackHandlerServicer_to_server(rec, server)
        sock = os.path.join(self.tmp, f"host-cb-{service_id}")
        if self.cert:
            server.add_secure_port("unix:" + sock, grpc.ssl_server_credentials(
                [(self.cert.key_pem, self.cert.cert_pem)], self.plugin_pem, True))
        else:
            server.add_insecure_port("unix:" + sock)
        server.start()
        try:
            self.out.put(grpc_broker_pb2.ConnInfo(service_id=service_id, network="unix",
                                                  address=sock))
            res = connector_pb2_grpc.ConnectorStub(self.channel).Sync(
                connector_pb2.SyncRequest(options=options, callback_handler_server=service_id),
                timeout=30)
        finally:
            server.stop(None)
        return res, rec

    def kill(self):
        self.out.put(None)
        self.broker.cancel()
        started = time.monotonic()
        try:
            grpc_controller_pb2_grpc.GRPCControllerStub(self.channel).Shutdown(
                grpc_controller_pb2.Empty(), timeout=2)
        except grpc.RpcError:
            pass
        self.channel.close()
        try:
            code = self.proc.wait(2)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("the plugin needed SIGKILL after Shutdown")
        return code, time.monotonic() - started


@pytest.mark.parametrize("host_curve", [None, "P-256", "P-521"])
def test_full_session(tmp_path, host_curve):
    host = Host(tmp_path, host_curve)
    try:
        health = health_pb2_grpc.HealthStub(host.channel)
        for service in ("plugin", ""):
            assert health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10).status \
                == health_pb2.HealthCheckResponse.SERVING
        res, rec = host.sync('{"pages":3,"page_size":5}')
        assert json.loads(res.metadata) == {"pages": 3, "objects": 15, "connector": "hello-python"}
        assert rec.ids == [f"greeting-{n}" for n in range(15)]
        res, rec = host.sync('{"pages":2,"page_size":1}', service_id=2)
        assert rec.pages == 2
    finally:
        code, seconds = host.kill()
    assert code == 0
    assert seconds < 1.5
    assert not os.path.exists(host.path), "socket left behind"
    assert [p.name for p in tmp_path.iterdir() if not p.name.startswith("host-cb")] == []
    assert all(json.loads(line)["@message"] for line in host.stderr if line.startswith(b"{"))


def test_socket_dir_group_and_sigint(tmp_path):
    sockdir = tmp_path / "sockets"
    sockdir.mkdir()
    host = Host(tmp_path, extra_env={"PLUGIN_UNIX_SOCKET_DIR": str(sockdir),
                                     "PLUGIN_UNIX_SOCKET_GROUP": str(os.getgid())})
    try:
        assert os.path.dirname(host.path) == str(sockdir)
        st = os.stat(host.path)
        assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o660
        assert st.st_gid == os.getgid()
        host.proc.send_signal(signal.SIGINT)  # ignored, like go-plugin
        time.sleep(0.3)
        assert host.proc.poll() is None
        res, rec = host.sync("{}")
        assert rec.pages == 3
    finally:
        code, _ = host.kill()
    assert code == 0
    assert b"plugin received interrupt signal, ignoring" in b"".join(host.stderr)
