"""A long-lived process per site that runs the ClientApp's handlers (deployments).

Flower 1.42 starts a new ``flwr-clientapp`` process for every message. Each one
would import torch and this package, load the site's data and rebuild the client
part and its optimizer: seconds per exchange, measured in
``docs/pilot.md``. With node-config ``site-worker`` set to a socket path, the
ClientApp Flower starts (:mod:`pgsl_flower.site_app`) imports neither: it hands
the message and the node's ``Context`` to this worker over a Unix socket and
returns the worker's reply. The worker keeps torch, the decoded data and the
live client (:func:`pgsl_flower.client_app.live_client`) between messages, and
runs the same handlers, so a reply does not depend on where it was computed.

Trust: the socket is created owner-only (mode 0600) and the worker serves only
connections from its own user (``SO_PEERCRED``), because the frames are pickles,
which only the site's own processes may send. The worker runs the package
installed at the site, not the copy inside the FAB: keep the two the same.

Start it beside the SuperNode, with the same environment (``OMP_NUM_THREADS``):

    python -m pgsl_flower.pilot site-worker --socket /srv/pgsl/site-a.sock
"""

from __future__ import annotations

import os
import pickle
import socket
import struct
import time
from pathlib import Path
from typing import Any

from flwr.app import Context, Message, RecordDict

#: The node-config key naming the worker's socket (a file path).
SITE_WORKER_KEY = "site-worker"
#: The largest frame either side accepts (a message's content with the node's state).
MAX_FRAME_BYTES = 1 << 32
_HEADER = struct.Struct("!Q")


class SiteWorkerError(RuntimeError):
    """The worker could not be reached, or its handler failed (the text says which)."""


def _send(conn: socket.socket, payload: Any) -> None:
    data = pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL)
    conn.sendall(_HEADER.pack(len(data)))
    conn.sendall(data)  # not concatenated: a training message is megabytes


def _receive(conn: socket.socket, where: str) -> Any:
    header = _read_exactly(conn, _HEADER.size, where)
    (size,) = _HEADER.unpack(header)
    if size > MAX_FRAME_BYTES:
        raise SiteWorkerError(f"{where}: a frame of {size} bytes, more than the {MAX_FRAME_BYTES} allowed")
    return pickle.loads(_read_exactly(conn, size, where))  # noqa: S301 -- same user only, see the module docstring


def _read_exactly(conn: socket.socket, size: int, where: str) -> bytearray:
    buffer = bytearray(size)
    view, got = memoryview(buffer), 0
    while got < size:
        chunk = conn.recv_into(view[got:], size - got)
        if chunk == 0:
            raise SiteWorkerError(f"{where}: connection closed after {got} of {size} bytes")
        got += chunk
    return buffer


def forward(path: str, message: Message, context: Context, timeout: float | None = None) -> Message:
    """Have the worker at ``path`` handle ``message``; sets ``context.state`` to the node's state
    after it and returns the reply. Raises :class:`SiteWorkerError` (naming the socket) when the
    worker is not there or its handler raised; ``context`` is then left as it was."""
    where = f"node-config '{SITE_WORKER_KEY}' = {path!r}"
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(timeout)
            conn.connect(path)
            _send(conn, (message, context))
            status, payload, state = _receive(conn, where)
    except OSError as err:  # not there, refused, or no answer within ``timeout``
        raise SiteWorkerError(
            f"{where}: no answer from a site worker there ({err}); is it running? Start it with "
            f"'python -m pgsl_flower.pilot site-worker --socket {path}'"
        ) from err
    if status != "ok":
        raise SiteWorkerError(f"{where}: the site worker's handler failed: {payload}")
    context.state = state
    return Message(payload, reply_to=message)


def handle(message: Message, context: Context) -> tuple[str, Any, RecordDict | None]:
    """Run the ClientApp on one message: ``("ok", reply content, node state)`` or
    ``("error", text, None)``."""
    from pgsl_flower.client_app import app

    try:
        reply = app(message, context)
    except Exception as err:  # noqa: BLE001 -- the text goes back to the ClientApp, which raises it
        return "error", f"{type(err).__name__}: {err}", None
    if reply.has_error():
        return "error", reply.error.reason, None
    return "ok", reply.content, context.state


def _peer_uid(conn: socket.socket) -> int:
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack("3i", creds)[1]


def listen(path: Path) -> socket.socket:
    """A Unix socket at ``path``, owner-only; refuses to replace anything but a socket."""
    path = Path(path)
    if path.exists() or path.is_symlink():
        if not path.is_socket():
            raise FileExistsError(f"site worker socket {path}: a file that is not a socket is there")
        path.unlink()  # a previous worker's
    path.parent.mkdir(parents=True, exist_ok=True)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        server.bind(str(path))
    finally:
        os.umask(old)
    server.listen(4)
    return server


def serve(path: Path, max_messages: int | None = None) -> None:
    """Serve messages at ``path``, one at a time (a SuperNode sends one at a time), until
    killed or after ``max_messages``."""
    import pgsl_flower.client_app  # noqa: F401 -- torch and the handlers, once

    server = listen(path)
    print(f"pgsl-flower site worker: serving {path} (pid {os.getpid()})", flush=True)
    served = 0
    try:
        while max_messages is None or served < max_messages:
            conn, _ = server.accept()
            with conn:
                if _peer_uid(conn) != os.getuid():
                    continue  # another user's process: not served
                try:
                    message, context = _receive(conn, f"site worker {path}")
                except (SiteWorkerError, pickle.UnpicklingError, EOFError) as err:
                    print(f"pgsl-flower site worker: bad request: {err}", flush=True)
                    continue
                started = time.perf_counter()
                answer = handle(message, context)
                try:
                    _send(conn, answer)
                except OSError as err:  # the ClientApp process went away: the SuperNode keeps the old state
                    print(f"pgsl-flower site worker: reply not delivered: {err}", flush=True)
                    continue
                served += 1
                print(f"pgsl-flower site worker: {message.metadata.message_type} for node {context.node_id}: "
                      f"{answer[0]} in {time.perf_counter() - started:.3f} s", flush=True)
    finally:
        server.close()
        Path(path).unlink(missing_ok=True)
