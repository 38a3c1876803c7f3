"""Write Tributary connectors in Python.

A connector is a go-plugin gRPC plugin speaking c1's connector protocol. Implement
:class:`Connector` and hand it to :func:`serve`::

    from tributary_connector import Connector, DataObject, serve

    class Hello(Connector):
        def sync(self, options, callback):
            callback.upsert([DataObject(remote_id="1", resource_name="hello")])
            return '{"pages":1}'

    if __name__ == "__main__":
        serve(Hello())
"""

from ._proto import connector_pb2  # c1's generated messages (DataObject, SyncResponse, ...)
from .broker import Broker, BrokerError
from .connector import (Callback, CallbackError, CleanError, Connector, DataObject, UpsertError)
from .handshake import DEFAULT_HANDSHAKE, HandshakeConfig
from .server import DEFAULT_MAX_RECEIVE_MESSAGE_BYTES, serve

__version__ = "0.1.0"

__all__ = [
    "Broker", "BrokerError", "Callback", "CallbackError", "CleanError", "Connector", "DataObject",
    "DEFAULT_HANDSHAKE", "DEFAULT_MAX_RECEIVE_MESSAGE_BYTES", "HandshakeConfig", "UpsertError",
    "connector_pb2", "serve", "__version__",
]
