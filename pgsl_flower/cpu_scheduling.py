"""Client priority in a one-machine simulation: the ClientApps yield the cores to the server.

In Flower's simulation the ServerApp runs in a thread of the driver process and the
ClientApps in Ray actors on the same cores. The server's step is the pipeline's
bottleneck (``benchmarks/throughput.py --probe``), and a two-thread OpenMP step
stalls whenever a ClientApp takes one of its cores. ``simulate(client_priority="idle")``
wraps the ClientApp in :func:`idle_priority_mod`, which runs the ClientApps' threads
under Linux's ``SCHED_IDLE`` policy: they compute when the server waits or leaves a
core unused, and the server's threads preempt them at once.

Only for a machine the simulation has to itself: under other load, idle-priority
clients get almost no CPU and may miss run-config 'reply-timeout'. The results do not
change (scheduling changes no arithmetic: ``tests/test_simulation.py``).
"""

from __future__ import annotations

import os
from collections.abc import Callable

from flwr.app import Context, Message

from pgsl_flower.config import ConfigError

#: ``simulate(client_priority=...)`` values.
CLIENT_PRIORITIES = ("normal", "idle")


def check_client_priority(priority: str) -> None:
    """Refuse (:class:`ConfigError`) an unknown value, or ``"idle"`` where the OS has no ``SCHED_IDLE``."""
    if priority not in CLIENT_PRIORITIES:
        raise ConfigError(f"client-priority must be one of {CLIENT_PRIORITIES}, got {priority!r}")
    if priority == "idle" and not hasattr(os, "SCHED_IDLE"):
        raise ConfigError("client-priority 'idle' needs Linux's SCHED_IDLE, which this platform lacks")


def idle_priority_mod(message: Message, context: Context, call_next: Callable[[Message, Context], Message]) -> Message:
    """Flower client mod: handle the message on a thread scheduled ``SCHED_IDLE``
    (the thread keeps the policy, and threads it starts inherit it)."""
    os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    return call_next(message, context)
