"""Serving side of pimgate_sdk: the EventHandler and Health servicers, the handler pool and the
run loop that ties them to SIGTERM."""

import logging
import os
import queue
import signal
import stat
import sys
import threading
import time
from concurrent import futures

import grpc

from pimgate.v1 import plugin_pb2, plugin_pb2_grpc
from pimgate_sdk import _result
from pimgate_sdk._health import health_pb2, health_pb2_grpc

_log = logging.getLogger("pimgate_sdk")

# Address served when $PIMGATE_PLUGIN_ADDRESS is unset (running a plugin by hand).
DEFAULT_ADDRESS = "127.0.0.1:50051"
# Largest Delivery accepted (an event's `data` can hold a whole product).
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
# gRPC server threads. Each Deliver stream and each health Watch holds one for its lifetime;
# pimgate keeps one Deliver stream per plugin, or with cluster dispatch one per partition the node
# holds (store.jetstream.cluster.partitions, at most 64), and polls Check.
RPC_THREADS = 80
# How long SIGTERM waits for running handlers before the plugin exits anyway: under pimgate's
# default plugins[].stop_timeout (10 s, then SIGKILL), so the plugin ends on its own terms.
DEFAULT_GRACE_SECONDS = 8.0
# After the streams have ended: time for their final status and for health checks in flight.
# An open client connection holds gRPC's graceful stop for this whole time.
_STOP_GRACE_SECONDS = 0.5
# How often blocked waits look at shutdown and cancellation flags.
_POLL_SECONDS = 0.2

_EVENT_HANDLER_SERVICE = "pimgate.v1.EventHandler"
_END = object()
_HANDSHAKE = object()  # DeliverBatch: an empty AckBatch is owed for pimgate's opening batch


class _HandlerPool:
    """Runs handler calls on `concurrency` daemon threads. A caller takes a slot (acquire) before
    submit, so at most `concurrency` deliveries are in the pool at once and the stream readers
    stop reading (gRPC flow control pushes back on pimgate) while every slot is busy. Daemon
    threads so that a handler stuck past the shutdown grace cannot keep the process alive.
    Thread-safe."""

    def __init__(self, handler, concurrency: int):
        self._handler = handler
        self._slots = threading.BoundedSemaphore(concurrency)
        self._tasks = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._busy = 0  # guarded by _lock: deliveries submitted and not yet answered
        for i in range(concurrency):
            threading.Thread(target=self._work, name=f"pimgate-handler-{i}", daemon=True).start()

    def acquire(self, timeout: float) -> bool:
        return self._slots.acquire(timeout=timeout)

    def release(self) -> None:
        self._slots.release()

    def submit(self, delivery, on_done) -> None:
        """Runs the handler for `delivery` and calls on_done(ack). The caller holds a slot;
        it is released once on_done returns."""
        with self._lock:
            self._busy += 1
        self._tasks.put((delivery, on_done))

    def wait_idle(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._busy:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._idle.wait(remaining)
        return True

    def _work(self) -> None:
        while True:
            delivery, on_done = self._tasks.get()
            try:
                on_done(self._call(delivery))
            except Exception:  # noqa: BLE001 - a broken callback must not kill the worker
                _log.exception("delivering an ack failed")
            finally:
                self._slots.release()
                with self._idle:
                    self._busy -= 1
                    if not self._busy:
                        self._idle.notify_all()

    def _call(self, delivery) -> plugin_pb2.Ack:
        sequence = delivery.event.sequence
        try:
            value = self._handler(delivery.event, delivery.attempt)
        except BaseException as e:  # noqa: BLE001 - every failure becomes a RETRY
            _log.warning("handler failed on sequence %d (%s, attempt %d): %s", sequence,
                         delivery.event.type, delivery.attempt, e, exc_info=True)
            text = str(e)
            return plugin_pb2.Ack(sequence=sequence, outcome=plugin_pb2.OUTCOME_RETRY,
                                  detail=_result.clip(f"{type(e).__name__}: {text}" if text
                                                      else type(e).__name__))
        ack = _result.to_ack(sequence, value)
        if ack.outcome != plugin_pb2.OUTCOME_OK:
            _log.info("sequence %d (%s) -> %s %s", sequence, delivery.event.type,
                      plugin_pb2.Outcome.Name(ack.outcome), ack.detail)
        return ack


class _DeliverStream:
    """One Deliver call: a reader thread feeds deliveries to the pool, the gRPC thread yields
    acks from a queue in completion order. The stream ends (status OK) once no more deliveries
    will be taken (the client half-closed, or the plugin is draining) and every taken delivery
    has been answered; it ends at once if the call is cancelled."""

    def __init__(self, pool: _HandlerPool):
        self._pool = pool
        self._acks = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._in_flight = 0  # guarded by _lock
        self._reading = True  # guarded by _lock
        self._draining = False  # guarded by _lock
        self._ended = False  # guarded by _lock

    def read(self, requests) -> None:
        try:
            for delivery in requests:
                if not self._take_slot():
                    break
                with self._lock:
                    if self._draining or self._ended:
                        # Not taken: no ack, so pimgate sends it again after reconnecting.
                        self._pool.release()
                        break
                    self._in_flight += 1
                self._pool.submit(delivery, self._complete)
        except Exception as e:  # noqa: BLE001 - a cancelled call ends the iterator this way
            _log.debug("deliver stream read ended: %s", e)
        finally:
            with self._lock:
                self._reading = False
                self._maybe_end_locked()

    def acks(self):
        while True:
            item = self._acks.get()
            if item is _END:
                return
            yield item

    def drain(self) -> None:
        """Takes no further deliveries; the stream ends when the running ones are answered."""
        with self._lock:
            self._draining = True
            self._maybe_end_locked()

    def cancel(self) -> None:
        """The call is over (cancelled, or finished): unblock acks()."""
        with self._lock:
            if not self._ended:
                self._ended = True
                self._acks.put(_END)

    def _take_slot(self) -> bool:
        while not self._pool.acquire(_POLL_SECONDS):
            with self._lock:
                if self._draining or self._ended:
                    return False
        return True

    def _complete(self, ack) -> None:
        with self._lock:
            if not self._ended:
                self._acks.put(ack)
            self._in_flight -= 1
            self._maybe_end_locked()

    def _maybe_end_locked(self) -> None:
        if (not self._reading or self._draining) and not self._in_flight and not self._ended:
            self._ended = True
            self._acks.put(_END)


class _DeliverBatchStream(_DeliverStream):
    """One DeliverBatch call: as _DeliverStream, with the deliveries of each DeliveryBatch taken
    one by one, and every ack finished by the time the next message is written sent together in
    one AckBatch (per-message costs are what limit a plugin's rate). pimgate opens the call with
    an empty DeliveryBatch: it is answered with an empty AckBatch."""

    def read(self, requests) -> None:
        super().read(self._deliveries(requests))

    def _deliveries(self, requests):
        for batch in requests:
            if not batch.deliveries:
                self._acks.put(_HANDSHAKE)
                continue
            yield from batch.deliveries

    def acks(self):
        while True:
            item = self._acks.get()
            batch = plugin_pb2.AckBatch()
            handshake = False
            while item is not _END:
                if item is _HANDSHAKE:
                    handshake = True
                else:
                    batch.acks.append(item)
                try:
                    item = self._acks.get_nowait()
                except queue.Empty:
                    break
            if batch.acks or handshake:
                yield batch
            if item is _END:
                return


class _EventHandlerServicer(plugin_pb2_grpc.EventHandlerServicer):
    def __init__(self, pool: _HandlerPool):
        self._pool = pool
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._streams = set()  # guarded by _lock
        self._draining = False  # guarded by _lock

    def Deliver(self, request_iterator, context):  # noqa: N802 - gRPC method name
        yield from self._serve(_DeliverStream(self._pool), request_iterator, context)

    def DeliverBatch(self, request_iterator, context):  # noqa: N802 - gRPC method name
        yield from self._serve(_DeliverBatchStream(self._pool), request_iterator, context)

    def _serve(self, stream, request_iterator, context):
        with self._lock:
            if self._draining:
                context.abort(grpc.StatusCode.UNAVAILABLE, "plugin is stopping")
            self._streams.add(stream)
        _log.info("pimgate connected (%s)", context.peer())
        context.add_callback(stream.cancel)
        threading.Thread(target=stream.read, args=(request_iterator,),
                         name="pimgate-deliver-reader", daemon=True).start()
        try:
            yield from stream.acks()
        finally:
            with self._changed:
                self._streams.discard(stream)
                self._changed.notify_all()
            _log.info("deliver stream closed (%s)", context.peer())

    def drain(self, timeout: float) -> bool:
        """Stops taking deliveries and waits up to `timeout` for open streams to end."""
        deadline = time.monotonic() + timeout
        with self._changed:
            self._draining = True
            streams = list(self._streams)
        for stream in streams:
            stream.drain()
        with self._changed:
            while self._streams:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._changed.wait(remaining)
        return True


class _HealthServicer(health_pb2_grpc.HealthServicer):
    """grpc.health.v1.Health for the whole server ("") and for pimgate.v1.EventHandler."""

    _SERVICES = ("", _EVENT_HANDLER_SERVICE)

    def __init__(self):
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._status = health_pb2.HealthCheckResponse.NOT_SERVING  # guarded by _lock

    def set(self, status) -> None:
        with self._changed:
            self._status = status
            self._changed.notify_all()

    def Check(self, request, context):  # noqa: N802 - gRPC method name
        if request.service not in self._SERVICES:
            context.abort(grpc.StatusCode.NOT_FOUND, f"unknown service {request.service!r}")
        with self._lock:
            return health_pb2.HealthCheckResponse(status=self._status)

    def Watch(self, request, context):  # noqa: N802 - gRPC method name
        last = None
        while context.is_active():
            with self._changed:
                if request.service in self._SERVICES:
                    status = self._status
                else:
                    status = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
                if status == last:
                    self._changed.wait(_POLL_SECONDS * 5)
                    continue
            last = status
            yield health_pb2.HealthCheckResponse(status=status)


def configure_logging() -> None:
    root = logging.getLogger()
    if root.handlers:
        return  # the plugin configured logging itself
    # Records below WARNING go to stdout, the others to stderr: pimgate logs a plugin's stdout at
    # info and its stderr at warning (keeping the last stderr lines of a run that fails), so
    # stderr is for what an operator must see.
    formatter = logging.Formatter(
        "%(asctime)s %(levelname)s [" + plugin_name() + "] %(name)s: %(message)s")
    out = logging.StreamHandler(sys.stdout)
    out.addFilter(lambda record: record.levelno < logging.WARNING)
    err = logging.StreamHandler(sys.stderr)
    err.setLevel(logging.WARNING)
    for handler in (out, err):
        handler.setFormatter(formatter)
        root.addHandler(handler)
    root.setLevel(os.environ.get("PIMGATE_LOG_LEVEL", "INFO").upper())


def plugin_name() -> str:
    return os.environ.get("PIMGATE_PLUGIN_NAME") or "plugin"


def _unix_socket_path(address: str):
    if not address.startswith("unix:"):
        return None
    path = address[len("unix:"):]
    if path.startswith("//"):  # unix:///abs/path
        path = path[2:]
    return path


def _remove_stale_socket(path: str) -> None:
    """A socket file left by a killed plugin would make bind fail; anything else is kept."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if stat.S_ISSOCK(mode):
        os.unlink(path)


def serve(handler, concurrency: int, grace_seconds: float, default_address: str) -> int:
    if concurrency < 1:
        raise ValueError(f"concurrency must be at least 1, got {concurrency}")
    configure_logging()
    address = os.environ.get("PIMGATE_PLUGIN_ADDRESS") or default_address
    socket_path = _unix_socket_path(address)
    if socket_path:
        _remove_stale_socket(socket_path)

    pool = _HandlerPool(handler, concurrency)
    events = _EventHandlerServicer(pool)
    health = _HealthServicer()
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=RPC_THREADS, thread_name_prefix="pimgate-rpc"),
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            # Two plugins configured with one port must not both bind it.
            ("grpc.so_reuseport", 0),
        ],
    )
    plugin_pb2_grpc.add_EventHandlerServicer_to_server(events, server)
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    try:
        port = server.add_insecure_port(address)
    except RuntimeError as e:
        raise OSError(f"cannot listen on {address}: {e}") from e
    if port == 0:
        raise OSError(f"cannot listen on {address}")

    stop = threading.Event()
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGINT):
            previous[signum] = signal.signal(signum, lambda *_: stop.set())
    server.start()
    health.set(health_pb2.HealthCheckResponse.SERVING)
    _log.info("serving %s on %s (concurrency %d)", _EVENT_HANDLER_SERVICE, address, concurrency)
    try:
        while not stop.wait(_POLL_SECONDS * 5):
            pass
    finally:
        _log.info("stopping: finishing running handlers (grace %.1fs)", grace_seconds)
        health.set(health_pb2.HealthCheckResponse.NOT_SERVING)
        deadline = time.monotonic() + grace_seconds
        drained = events.drain(grace_seconds)
        idle = pool.wait_idle(max(0.0, deadline - time.monotonic()))
        if not (drained and idle):
            _log.warning("handlers still running after %.1fs: their events will be redelivered",
                         grace_seconds)
        server.stop(grace=_STOP_GRACE_SECONDS).wait()
        for signum, old in previous.items():
            signal.signal(signum, old)
        # The socket file is left alone: a successor may already have bound the same path.
    _log.info("stopped")
    return 0
