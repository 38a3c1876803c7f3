#!/usr/bin/env python3
"""Test fixture for the http-index connector: serves DIRECTORY on 127.0.0.1 (a free port) with
python's own http.server handler, plus a few special paths. Prints "PORT <n>" on stdout once
listening, then serves until killed.

  /listing.json        a JSON listing (nginx autoindex_format json style)
  /caddy.json          Caddy browse-style JSON, served as application/json
  /names.json          a plain array of names
  /bad.json            not JSON
  /slow/               answers after 5 s
  /no-head/...         405 for HEAD
  /broken-sub/         a listing whose sub-directory link returns 404
"""
import http.server
import json
import sys
import time
from functools import partial


class Handler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # Quiet.
        pass

    def _send(self, status, body, content_type):
        data = body.encode("utf-8") if isinstance(body, str) else body
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def do_HEAD(self):
        if self.path.startswith("/no-head/"):
            self._send(405, "", "text/plain")
            return
        super().do_HEAD()

    def do_GET(self):
        if self.path == "/listing.json":
            self._send(200, json.dumps([
                {"name": "a.txt", "type": "file", "mtime": "Sat, 02 Jan 2021 03:04:05 GMT",
                 "size": 12},
                {"name": "sub", "type": "directory", "mtime": "Sat, 02 Jan 2021 03:04:05 GMT"},
                {"name": "with space.bin", "type": "file", "size": 3},
            ]), "application/json")
        elif self.path == "/caddy.json":
            self._send(200, json.dumps([
                {"name": "x.tar.gz", "size": 99, "url": "./x.tar.gz",
                 "mod_time": "2021-01-02T03:04:05Z", "is_dir": False},
                {"name": "d", "url": "./d/", "is_dir": True},
            ]), "application/json; charset=utf-8")
        elif self.path == "/names.json":
            self._send(200, json.dumps(["one", "two/", "https://elsewhere.example/x"]),
                       "application/json")
        elif self.path == "/bad.json":
            self._send(200, "{not json", "application/json")
        elif self.path.startswith("/slow/"):
            time.sleep(5)
            self._send(200, "<a href='x'>x</a>", "text/html")
        elif self.path == "/broken-sub/":
            self._send(200, "<a href='missing/'>missing/</a><a href='f'>f</a>", "text/html")
        elif self.path.startswith("/no-head/") and self.path.endswith("/"):
            self._send(200, "<a href='f.txt'>f.txt</a>", "text/html")
        else:
            super().do_GET()


def main():
    directory = sys.argv[1]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(Handler,
                                                                       directory=directory))
    server.daemon_threads = True
    print(f"PORT {server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
