#!/usr/bin/env python3
"""A complete (tiny) Tributary connector: three pages of greetings.

Options (JSON, all optional): {"name": "world", "pages": 3, "page_size": 4}.
Run it from a host (`tributary run`, or any go-plugin host with cookie BASIC_PLUGIN=hello);
started by hand it prints go-plugin's "This binary is a plugin" message and exits 1.
"""

import json
import logging

from tributary_connector import Connector, DataObject, serve

log = logging.getLogger("hello")

GREETINGS = ["Hello", "Bonjour", "Hola", "Ciao", "Hallo", "Olá", "Hej", "Ahoj", "Merhaba",
             "Salut", "Sawubona", "Kia ora"]


class HelloConnector(Connector):
    def sync(self, options, callback):
        opts = json.loads(options) if options.strip() else {}
        name = opts.get("name", "world")
        pages = int(opts.get("pages", 3))
        page_size = int(opts.get("page_size", 4))

        objects = 0
        for page in range(pages):
            batch = []
            for i in range(page_size):
                n = page * page_size + i
                greeting = GREETINGS[n % len(GREETINGS)]
                batch.append(DataObject(
                    remote_id=f"greeting-{n}",
                    resource_name=f"{greeting}, {name}!",
                    uri=f"hello://{name}/{n}",
                    metadata={"language_index": n % len(GREETINGS), "page": page},
                ))
            # Returns once the host stored the page; raises UpsertError (failing the Sync) if not.
            callback.upsert(batch)
            objects += len(batch)
            log.info("page sent", extra={"page": page, "objects": len(batch)})
        return {"pages": pages, "objects": objects, "connector": "hello-python"}


if __name__ == "__main__":
    serve(HelloConnector())
