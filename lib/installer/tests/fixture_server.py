#!/usr/bin/env python3
"""Loopback HTTP server for the installer tests (Python standard library only).

Prints the port it listens on (127.0.0.1, chosen by the kernel) as the first line of stdout, then
serves until killed:

  GET  /files/<path>               a file under --files
  GET  /redirect/<n>/<path>        n redirects (302, relative Location), then /files/<path>
  GET  /loop                       redirects to itself forever
  GET  /status/<code>              that status code
  GET  /stall/<path>               headers + 16 bytes of the file, then nothing (idle timeout)
  GET  /slowstart                  nothing at all for a minute
  GET  /stream/<bytes>/<name>      that many zero bytes, no Content-Length (size limit while streaming)
  GET  /biglen/<name>              claims Content-Length: 10^12
  GET  /auth/<path>                /files/<path> if "Authorization: Bearer <--token>", else 401
  GET  /cross/<path>               302 to http://localhost:<port>/noauth/<path> (another origin)
  GET  /noauth/<path>              400 if an Authorization header arrived, else /files/<path>
  GET  /count/<path>               how many requests /<path> got so far
  GET|POST /git/<repo>/...         git smart HTTP (git http-backend) over --git-root; repos under
                                   private/ need basic auth with password --token
"""
import argparse
import base64
import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ARGS = None
HITS = {}
HITS_LOCK = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):  # quiet
        pass

    def _count(self):
        path = self.path.split("?", 1)[0]
        with HITS_LOCK:
            HITS[path] = HITS.get(path, 0) + 1

    def _send(self, code, body=b"", headers=None):
        self.send_response(code)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _file(self, rel):
        full = os.path.realpath(os.path.join(ARGS.files, rel))
        if not full.startswith(os.path.realpath(ARGS.files) + os.sep) or not os.path.isfile(full):
            self._send(404, b"not found")
            return
        with open(full, "rb") as f:
            data = f.read()
        self._send(200, data, {"Content-Type": "application/octet-stream"})

    def do_GET(self):
        self._count()
        path = self.path.split("?", 1)[0]
        parts = path.lstrip("/").split("/", 1)
        head, rest = parts[0], (parts[1] if len(parts) > 1 else "")
        if head == "git":
            return self._git()
        if head == "files":
            return self._file(rest)
        if head == "redirect":
            n, _, rel = rest.partition("/")
            n = int(n)
            location = "/files/" + rel if n <= 1 else "/redirect/%d/%s" % (n - 1, rel)
            return self._send(302, b"", {"Location": location})
        if head == "loop":
            return self._send(302, b"", {"Location": "/loop"})
        if head == "status":
            return self._send(int(rest), b"status %s" % rest.encode())
        if head == "stall":
            full = os.path.join(ARGS.files, rest)
            size = os.path.getsize(full)
            self.send_response(200)
            self.send_header("Content-Length", str(size))
            self.end_headers()
            with open(full, "rb") as f:
                self.wfile.write(f.read(16))
            self.wfile.flush()
            time.sleep(60)
            return
        if head == "slowstart":
            time.sleep(60)
            return
        if head == "stream":
            n, _, _name = rest.partition("/")
            n = int(n)
            self.send_response(200)
            self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True
            chunk = b"\0" * 65536
            sent = 0
            try:
                while sent < n:
                    part = chunk[: min(len(chunk), n - sent)]
                    self.wfile.write(part)
                    sent += len(part)
            except (BrokenPipeError, ConnectionResetError):
                pass
            return
        if head == "biglen":
            self.send_response(200)
            self.send_header("Content-Length", str(10**12))
            self.end_headers()
            try:
                self.wfile.write(b"x" * 1024)
            except (BrokenPipeError, ConnectionResetError):
                pass
            self.close_connection = True
            return
        if head == "auth":
            if self.headers.get("Authorization") != "Bearer " + ARGS.token:
                return self._send(401, b"unauthorized", {"WWW-Authenticate": "Bearer"})
            return self._file(rest)
        if head == "cross":
            port = self.server.server_address[1]
            return self._send(302, b"", {"Location": "http://localhost:%d/noauth/%s" % (port, rest)})
        if head == "noauth":
            if self.headers.get("Authorization"):
                return self._send(400, b"credentials leaked across origins")
            return self._file(rest)
        if head == "count":
            with HITS_LOCK:
                n = HITS.get("/" + rest, 0)
            return self._send(200, str(n).encode())
        self._send(404, b"no such route")

    def do_POST(self):
        self._count()
        if self.path.startswith("/git/"):
            return self._git()
        self._send(404, b"no such route")

    def _read_body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            body = b""
            while True:
                size = int(self.rfile.readline().strip().split(b";")[0], 16)
                if size == 0:
                    while self.rfile.readline().strip():
                        pass
                    return body
                body += self.rfile.read(size)
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _git(self):
        path, _, query = self.path.partition("?")
        path_info = path[len("/git"):]
        body = self._read_body()
        if path_info.startswith("/private/"):
            auth = self.headers.get("Authorization", "")
            ok = False
            if auth.startswith("Basic "):
                try:
                    user, _, password = base64.b64decode(auth[6:]).decode().partition(":")
                    ok = password == ARGS.token
                except Exception:  # noqa: BLE001
                    ok = False
            if not ok:
                # Empty body and a closed connection: libgit2 1.5 reuses the connection for
                # the authenticated retry without draining a 401 body.
                self.close_connection = True
                return self._send(401, b"", {"WWW-Authenticate": 'Basic realm="git"',
                                             "Connection": "close"})
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "GIT_PROJECT_ROOT": ARGS.git_root,
            "GIT_HTTP_EXPORT_ALL": "1",
            "GATEWAY_INTERFACE": "CGI/1.1",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "REQUEST_METHOD": self.command,
            "PATH_INFO": path_info,
            "QUERY_STRING": query,
            "CONTENT_TYPE": self.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(len(body)),
            "REMOTE_ADDR": "127.0.0.1",
            "REMOTE_USER": "tester",
        }
        if self.headers.get("Content-Encoding"):
            env["HTTP_CONTENT_ENCODING"] = self.headers["Content-Encoding"]
        if self.headers.get("Git-Protocol"):
            env["GIT_PROTOCOL"] = self.headers["Git-Protocol"]
        proc = subprocess.run(["git", "http-backend"], input=body, env=env, capture_output=True)
        out = proc.stdout
        sep = out.find(b"\r\n\r\n")
        sep_len = 4
        if sep < 0:
            sep = out.find(b"\n\n")
            sep_len = 2
        if sep < 0:
            return self._send(500, b"bad CGI output: " + proc.stderr)
        header_lines = out[:sep].decode("latin-1").splitlines()
        payload = out[sep + sep_len:]
        code = 200
        headers = {}
        for line in header_lines:
            k, _, v = line.partition(":")
            if k.lower() == "status":
                code = int(v.strip().split()[0])
            else:
                headers[k.strip()] = v.strip()
        self._send(code, payload, headers)


def main():
    global ARGS
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", required=True)
    parser.add_argument("--git-root", required=True)
    parser.add_argument("--token", default="s3cret-token")
    ARGS = parser.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
