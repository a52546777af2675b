"""pimgate Python plugin SDK: write a handler, call run(), and pimgate delivers events to it.

    #!/usr/bin/python3
    import sys
    import pimgate_sdk

    def handle(event, attempt):
        print(event.type, event.resource_id, pimgate_sdk.data(event).get("identifier"))
        return pimgate_sdk.ok()          # or None; retry("why") / reject("why")

    if __name__ == "__main__":
        sys.exit(pimgate_sdk.run(handle, concurrency=8))

pimgate starts the plugin with $PIMGATE_PLUGIN_ADDRESS ("unix:/abs/path.sock" or "host:port")
and $PIMGATE_PLUGIN_NAME, connects as the gRPC client and streams pimgate.v1.Delivery messages;
the SDK serves pimgate.v1.EventHandler and grpc.health.v1.Health and answers one Ack per
delivery. An OK ack is final: pimgate never sends that event to this plugin again, so a handler
returns OK only once its effect is durable (committed, sent, written). Delivery is at-least-once
(a crash before pimgate persisted the ack means a redelivery): handlers must be idempotent.

pimgate_sdk.testing runs a plugin process the way pimgate does and talks to it as pimgate's
gRPC client, for a plugin's own tests.

Import root: the build generates the stubs and copies this package into build/python; run with
PYTHONPATH=build/python /usr/bin/python3 (Debian's python3-grpcio and python3-protobuf).
"""

from google.protobuf import json_format

from pimgate.v1.event_pb2 import Event, Origin  # noqa: F401 - re-exported for handlers
from pimgate_sdk._result import Result, ok, reject, retry  # noqa: F401 - public API
from pimgate_sdk import _server

__all__ = ["Event", "Origin", "Result", "configure_logging", "data", "ok", "plugin_name", "reject",
           "retry", "run"]


def run(handler, concurrency: int = 8, *, grace_seconds: float = _server.DEFAULT_GRACE_SECONDS,
        default_address: str = _server.DEFAULT_ADDRESS) -> int:
    """Serves pimgate.v1.EventHandler and grpc.health.v1.Health at $PIMGATE_PLUGIN_ADDRESS
    (else `default_address`), reports SERVING and blocks until SIGTERM or SIGINT. Then it reports
    NOT_SERVING, takes no further deliveries, lets running handlers finish (up to
    `grace_seconds`; deliveries not answered by then are redelivered later) and returns 0.
    Raises OSError when it cannot listen.

    `handler(event, attempt)` gets a pimgate.v1.Event and the attempt number (1 for the first
    delivery; > 1 when the event may have reached the plugin before, also after a restart of
    pimgate or a takeover by another node) and returns None or ok() (OK), retry(detail) or reject(detail); an exception
    becomes a RETRY whose detail is the exception text. Up to `concurrency` handler calls run at
    once on separate threads, for different resources (pimgate never has two events of one
    resource outstanding), so a handler must be thread-safe when concurrency > 1. Call from the
    main thread: signal handlers are installed only there.
    """
    return _server.serve(handler, concurrency, grace_seconds, default_address)


def data(event) -> dict:
    """The event's `data` (a google.protobuf.Struct) as a plain dict. JSON numbers come back as
    float, as everywhere in Struct."""
    return json_format.MessageToDict(event.data)


def configure_logging() -> None:
    """Sends `logging` at $PIMGATE_LOG_LEVEL (default INFO) to stdout, WARNING and above to
    stderr (which pimgate logs at warning level), lines tagged with the plugin name, unless the
    program has configured logging already. run() calls it; call it earlier to log before
    run()."""
    _server.configure_logging()


def plugin_name() -> str:
    """The plugin's name ($PIMGATE_PLUGIN_NAME), or "plugin"."""
    return _server.plugin_name()
