"""Message transport over a Flower ``Grid`` with per-node pipelining.

``Grid.send_and_receive`` waits for all replies and polls every 0.1 s. Split
learning exchanges a message per batch, so that latency would dominate. Here a
message is pushed per node and a specific reply is awaited with a short,
backing-off poll, which lets the server work on one client's batch while the
other clients compute theirs.
"""

from __future__ import annotations

import time

from flwr.app import Message, RecordDict
from flwr.serverapp import Grid

from pgsl_flower import protocol

_FIRST_POLL = 0.001
_MAX_POLL = 0.02


class Courier:
    """Pushes messages to nodes and waits for their replies; counts payload bytes."""

    def __init__(self, grid: Grid, reply_timeout: float) -> None:
        self.grid = grid
        self.reply_timeout = reply_timeout
        self.bytes_down = 0
        self.bytes_up = 0
        self.messages = 0

    def push(self, node: int, content: RecordDict, message_type: str, group: str) -> str:
        """Send ``content`` to ``node``; returns the message id to wait on."""
        message = Message(content, dst_node_id=node, message_type=message_type, group_id=group)
        (message_id,) = list(self.grid.push_messages([message]))
        self.bytes_down += protocol.content_nbytes(content)
        self.messages += 1
        return message_id

    def wait(self, message_id: str) -> Message | None:
        """The reply to ``message_id``, or None after ``reply_timeout`` seconds."""
        deadline = time.monotonic() + self.reply_timeout
        interval = _FIRST_POLL
        while True:
            replies = list(self.grid.pull_messages([message_id]))
            if replies:
                reply = replies[0]
                if not reply.has_error():
                    self.bytes_up += protocol.content_nbytes(reply.content)
                return reply
            if time.monotonic() > deadline:
                return None
            time.sleep(interval)
            interval = min(interval * 2, _MAX_POLL)
