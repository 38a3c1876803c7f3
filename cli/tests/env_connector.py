#!/usr/bin/env python3
"""Test-only connector for the CLI's credential tests (cli/tests/cli_credentials_test.cc).

It reveals what it was started with, without revealing values: one object `env/<NAME>` per
environment variable with the SHA-256 of its value, and for each variable named in the options'
`files` list one object `file/<NAME>` with the path it points at, the file's mode and the SHA-256
of its content. Options: {"files": ["GOOGLE_APPLICATION_CREDENTIALS"]}.
"""

import hashlib
import json
import os
import stat

from tributary_connector import Connector, DataObject, serve


def sha256(data):
    return hashlib.sha256(data).hexdigest()


class EnvConnector(Connector):
    def sync(self, options, callback):
        opts = json.loads(options) if options.strip() else {}
        objects = []
        for name in sorted(os.environ):
            objects.append(DataObject(remote_id=f"env/{name}", resource_name=name,
                                      uri=f"env://{name}",
                                      metadata={"sha256": sha256(os.environ[name].encode())}))
        for name in opts.get("files", []):
            path = os.environ.get(name)
            meta = {"set": path is not None}
            if path is not None and os.path.isfile(path):
                st = os.stat(path)
                with open(path, "rb") as f:
                    content = f.read()
                meta.update({"path": path, "mode": format(stat.S_IMODE(st.st_mode), "04o"),
                             "dir_mode": format(stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode),
                                                "04o"),
                             "sha256": sha256(content), "size": len(content)})
            objects.append(DataObject(remote_id=f"file/{name}", resource_name=name,
                                      uri=f"file://{name}", metadata=meta))
        callback.upsert(objects)
        return {"variables": len(os.environ)}


if __name__ == "__main__":
    serve(EnvConnector())
