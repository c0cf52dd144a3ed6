"""Peak memory of a process tree: the sum of each process's PSS, polled in a thread.

PSS (``/proc/<pid>/smaps_rollup``) splits shared pages between the processes that
share them, so a Ray driver, its GCS, raylet and workers are not counted twice.
"""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Sequence
from pathlib import Path


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def tree_pss_bytes(root: int) -> int:
    """Sum of PSS over ``root`` and all its descendants (Linux /proc)."""
    total, stack, seen = 0, [root], set()
    while stack:
        pid = stack.pop()
        if pid in seen:
            continue
        seen.add(pid)
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1]) * 1024
                    break
        except OSError:
            continue  # exited between listing and reading
        stack.extend(_children(pid))
    return total


class PeakMemory(threading.Thread):
    """Polls the process tree's PSS until stopped; keeps the peak (bytes)."""

    def __init__(self, pid: int, interval: float = 0.25) -> None:
        super().__init__(daemon=True)
        self.pid, self.interval, self.peak = pid, interval, 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.peak = max(self.peak, tree_pss_bytes(self.pid))
            self._stop_event.wait(self.interval)

    def stop(self) -> int:
        self._stop_event.set()
        self.join()
        return self.peak


def run_with_peak_memory(command: Sequence[str], log_path: Path, cwd: Path) -> tuple[int, int]:
    """Run ``command`` (output to ``log_path``); returns (exit code, peak PSS of its tree in bytes)."""
    with Path(log_path).open("w") as log:
        process = subprocess.Popen(list(command), cwd=cwd, stdout=log, stderr=subprocess.STDOUT)
        monitor = PeakMemory(process.pid)
        monitor.start()
        try:
            code = process.wait()
        finally:
            peak = monitor.stop()
    return code, peak
