"""A whole pilot on one machine: a SuperLink and one SuperNode per site on 127.0.0.1.

Real processes (``flower-superlink``, ``flower-supernode``, ``flwr``) with TLS and
SuperNode authentication, exactly as ``docs/pilot.md`` runs them on three
terminals; used by the integration test and ``benchmarks/deployment.py``.
Every process started here is stopped by PID (with its descendants: Flower's
SuperExec and the per-message ClientApp processes) on :meth:`LocalPilot.stop`,
also when a step fails.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pgsl_flower.pilot.credentials import make_credentials, make_site_key
from pgsl_flower.pilot.site_worker import SITE_WORKER_KEY

CONNECTION = "pilot"
#: What a SuperNode logs once the SuperLink has accepted (authenticated) it.
_ACCEPTED = "SuperNode ID:"
_RUN_ID = re.compile(r"Successfully started run (\d+)")
#: Flower 1.42's SuperExec (started by each SuperNode) checks for a new task (a message for a
#: ClientApp) every this many seconds; Flower's default is 1.0, its allowed range 0.01..60.
TASK_POLL_ENV = "FLWR_SUPEREXEC_TASK_POLL_INTERVAL"
TASK_POLL_RANGE = (0.01, 60.0)
#: The pilot's default: a check costs one local HTTP request to the SuperNode, and each
#: exchange waited on average half the interval for it (0.5 s at Flower's 1.0).
DEFAULT_TASK_POLL_INTERVAL = 0.1
#: torch's intra-op threads come from this variable (torch's default: one per core).
THREADS_ENV = "OMP_NUM_THREADS"
#: ``LocalPilot(threads=AUTO_THREADS)``: share the machine's cores among the ServerApp and the sites.
AUTO_THREADS = "auto"


def threads_per_process(processes: int, cores: int | None = None) -> int:
    """torch threads per process when ``processes`` compute at once on one machine:
    its cores shared out, at least one each.

    Each process left at torch's default runs one OpenMP thread per core; with the
    ServerApp and every site's ClientApp computing at once on the same cores, the
    threads of one step wait on threads that are descheduled.
    """
    if processes < 1:
        raise ValueError(f"processes = {processes}: at least one process computes")
    return max(1, (cores or os.cpu_count() or 1) // processes)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def descendants(pid: int) -> list[int]:
    """PIDs of every live descendant of ``pid`` (from /proc), children first."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found, stack = [], [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


def kill_tree(pid: int, sig: int = signal.SIGKILL) -> None:
    """Signal ``pid`` and all its descendants (collected before anything is signalled)."""
    for target in [*descendants(pid), pid]:
        try:
            os.kill(target, sig)
        except ProcessLookupError:
            pass


def toml_value(value: Any) -> str:
    """A run-config / node-config value as Flower's ``key=value`` parser reads it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    return repr(value)


def config_arg(values: Mapping[str, Any]) -> str:
    return " ".join(f"{key}={toml_value(value)}" for key, value in values.items())


@dataclass
class RunResult:
    """What ``flwr run`` reported: run id, final status, and the ServerApp's log."""

    run_id: int
    status: str
    details: str
    log: str
    seconds: float


@dataclass
class LocalPilot:
    """SuperLink + SuperNodes + ``flwr`` CLI in ``workdir`` (certificates, logs, FLWR_HOME).

    ``sites`` maps a site name to its data folder (a site folder of
    :mod:`pgsl_flower.data.site_folder`). ``env`` is added to every process's
    environment (e.g. ``PGSL_DATA_DIR`` for the server's test set).
    ``task_poll_interval`` (seconds) is how often each SuperNode's SuperExec looks for a
    message to start a ClientApp for (:data:`TASK_POLL_ENV`); None leaves Flower's default (1.0 s).
    ``threads`` is every process's torch thread count (:data:`THREADS_ENV`, which the
    ServerApp and the ClientApp processes inherit): ``"auto"`` shares the cores among the
    ServerApp and the sites (:func:`threads_per_process`), None leaves the environment as it
    is (unset: torch's default, one thread per core in every process); ``env`` can set
    :data:`THREADS_ENV` itself instead. ``site_workers`` starts a long-lived worker per site
    beside its SuperNode (:mod:`pgsl_flower.pilot.site_worker`, node-config ``site-worker``).
    """

    workdir: Path
    sites: dict[str, Path]
    app_dir: Path
    env: dict[str, str] = field(default_factory=dict)
    task_poll_interval: float | None = DEFAULT_TASK_POLL_INTERVAL
    threads: int | str | None = AUTO_THREADS
    site_workers: bool = False
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    port: int = 0

    def __post_init__(self) -> None:
        self.workdir = Path(self.workdir).resolve()
        self.logs = self.workdir / "logs"
        self.certs = self.workdir / "certs"
        self.flwr_home = self.workdir / "flwr-home"
        self.bin = Path(sys.executable).parent
        low, high = TASK_POLL_RANGE
        if self.task_poll_interval is not None and not low <= self.task_poll_interval <= high:
            raise ValueError(
                f"LocalPilot task_poll_interval = {self.task_poll_interval!r}: Flower's {TASK_POLL_ENV} must be "
                f"in {low}..{high} seconds (None: Flower's default, 1.0)"
            )
        if self.threads == AUTO_THREADS:
            self.threads = threads_per_process(len(self.sites) + 1)
        if self.threads is not None and (isinstance(self.threads, bool) or not isinstance(self.threads, int)
                                         or self.threads < 1):
            raise ValueError(f"LocalPilot threads = {self.threads!r}: a positive int, {AUTO_THREADS!r} or None "
                             "(torch's default)")

    # -- processes -----------------------------------------------------------------------
    def _env(self) -> dict[str, str]:
        return {
            **os.environ,
            "PATH": f"{self.bin}{os.pathsep}{os.environ.get('PATH', '')}",
            "FLWR_HOME": str(self.flwr_home),
            "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
            "FLWR_TELEMETRY_ENABLED": "0",
            **({TASK_POLL_ENV: str(self.task_poll_interval)} if self.task_poll_interval is not None else {}),
            **({THREADS_ENV: str(self.threads)} if self.threads is not None else {}),
            **self.env,
        }

    def _spawn(self, name: str, command: list[str], cwd: Path | None = None) -> subprocess.Popen:
        self.logs.mkdir(parents=True, exist_ok=True)
        with (self.logs / f"{name}.log").open("w") as log:
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=self._env(),
                                       cwd=cwd or self.workdir)
        self.processes[name] = process
        return process

    def log_text(self, name: str) -> str:
        path = self.logs / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def _flwr(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        """The ``flwr`` CLI, run from ``workdir`` (it reads a project's pyproject in its cwd)."""
        return subprocess.run([str(self.bin / "flwr"), *args], capture_output=True, text=True, env=self._env(),
                              cwd=self.workdir, timeout=timeout)

    # -- bring-up ------------------------------------------------------------------------
    def start(self, timeout: float = 120) -> None:
        """Credentials, the SuperLink (TLS, SuperNode auth), register every site, start its SuperNode."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        make_credentials(self.certs, list(self.sites))
        self.port = free_port()
        self.flwr_home.mkdir(parents=True, exist_ok=True)
        (self.flwr_home / "config.toml").write_text(
            f'[superlink]\ndefault = "{CONNECTION}"\n\n[superlink.{CONNECTION}]\n'
            f'address = "127.0.0.1:{self.port}"\nroot-certificates = "{self.certs / "ca.crt"}"\n'
        )
        server_dir = self.workdir / "superlink"
        server_dir.mkdir(exist_ok=True)
        self._spawn("superlink", [
            str(self.bin / "flower-superlink"),
            "--ssl-ca-certfile", str(self.certs / "ca.crt"),
            "--ssl-certfile", str(self.certs / "superlink.crt"),
            "--ssl-keyfile", str(self.certs / "superlink.key"),
            "--enable-supernode-auth",
            "--host", "127.0.0.1", "--port", str(self.port),
            "--disable-runtime-dependency-installation",
        ], cwd=server_dir)
        self._wait_healthy(timeout)
        for site in self.sites:
            self.register(self.certs / f"{site}.pub")
        for partition, site in enumerate(self.sites):
            if self.site_workers:
                self.start_worker(site, timeout)
            self.start_site(site, partition)
        self.wait_accepted(list(self.sites), timeout)

    def _wait_healthy(self, timeout: float) -> None:
        context = ssl.create_default_context(cafile=str(self.certs / "ca.crt"))
        deadline = time.monotonic() + timeout
        while True:
            if self.processes["superlink"].poll() is not None:
                raise RuntimeError(f"flower-superlink exited:\n{self.log_text('superlink')[-3000:]}")
            try:
                with urllib.request.urlopen(f"https://127.0.0.1:{self.port}/health", context=context, timeout=2):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"flower-superlink not healthy after {timeout} s") from None
                time.sleep(0.3)

    def register(self, public_key: Path) -> None:
        """``flwr supernode register``: the SuperLink accepts SuperNodes holding this key's private half."""
        done = self._flwr("supernode", "register", str(public_key), CONNECTION)
        if done.returncode != 0:
            raise RuntimeError(f"flwr supernode register {public_key} failed:\n{done.stdout}{done.stderr}")

    def supernode_command(self, site: str, partition: int, key: Path | None = None, tls: bool = True,
                          extra: list[str] | None = None) -> list[str]:
        """The site's ``flower-supernode`` command line (its data folder, state and cache dirs via --node-config)."""
        node_config = {
            "partition-id": partition,
            "site-name": site,
            "data-dir": str(Path(self.sites[site]).resolve()),
            "state-dir": str(self.workdir / "site-state" / site),
            "cache-dir": str(self.workdir / "site-cache" / site),
        }
        if self.site_workers:
            node_config[SITE_WORKER_KEY] = str(self.worker_socket(site))
        command = [str(self.bin / "flower-supernode"), "--superlink", f"127.0.0.1:{self.port}",
                   "--node-config", config_arg(node_config), "--host", "127.0.0.1", "--port", str(free_port())]
        if tls:
            command += ["--root-certificates", str(self.certs / "ca.crt")]
        else:
            command += ["--insecure"]
        if key is not None:
            command += ["--auth-supernode-private-key", str(key)]
        return command + (extra or [])

    def worker_socket(self, site: str) -> Path:
        return self.workdir / "site-workers" / f"{site}.sock"

    def start_worker(self, site: str, timeout: float) -> None:
        """The site's worker (``python -m pgsl_flower.pilot site-worker``), once it serves its socket."""
        name, path = f"worker-{site}", self.worker_socket(site)
        self._spawn(name, [sys.executable, "-m", "pgsl_flower.pilot", "site-worker", "--socket", str(path)],
                    cwd=self.app_dir)
        self._wait_logged(name, "serving", "serving", timeout, time.monotonic() + timeout)

    def start_site(self, site: str, partition: int) -> subprocess.Popen:
        return self._spawn(f"supernode-{site}", self.supernode_command(site, partition, self.certs / f"{site}.key"))

    def _wait_logged(self, name: str, marker: str, what: str, timeout: float, deadline: float) -> None:
        """Wait until process ``name`` logs ``marker``; raise with its log tail if it exits or
        ``deadline`` (monotonic) passes first."""
        while marker not in self.log_text(name):
            if self.processes[name].poll() is not None:
                raise RuntimeError(f"{name} exited:\n{self.log_text(name)[-3000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} not {what} after {timeout} s:\n{self.log_text(name)[-3000:]}")
            time.sleep(0.2)

    def wait_accepted(self, sites: list[str], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for site in sites:
            self._wait_logged(f"supernode-{site}", _ACCEPTED, "accepted", timeout, deadline)

    def try_rogue_supernode(self, name: str, tls: bool, timeout: float = 60) -> tuple[int | None, str]:
        """Start a SuperNode that should be refused (unregistered key, or no TLS); returns
        (exit code or None if it still runs after ``timeout``, its log)."""
        key = make_site_key(self.certs, name)[0] if tls else None
        site = next(iter(self.sites))
        extra = [] if tls else ["--max-wait-time", "10"]
        process = self._spawn(f"rogue-{name}", self.supernode_command(site, 99, key, tls=tls, extra=extra))
        try:
            code = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            code = None
        return code, self.log_text(f"rogue-{name}")

    # -- runs ----------------------------------------------------------------------------
    def run(self, run_config: Mapping[str, Any], timeout: float = 1800) -> RunResult:
        """``flwr run <app> pilot --stream``, then the run's final status from ``flwr ls``
        (``flwr run`` exits 0 even when the ServerApp fails)."""
        started = time.monotonic()
        done = self._flwr("run", str(self.app_dir), CONNECTION, "--run-config", config_arg(run_config),
                          "--stream", timeout=timeout)
        seconds = time.monotonic() - started
        output = done.stdout + done.stderr
        (self.logs / "flwr-run.log").write_text(output)
        match = _RUN_ID.search(output)
        if match is None:
            raise RuntimeError(f"flwr run did not start a run:\n{output[-3000:]}")
        run_id = int(match.group(1))
        status, details = "", ""
        for _ in range(60):
            listed = self._flwr("ls", CONNECTION, "--run-id", str(run_id), "--format", "json")
            try:
                run = json.loads(listed.stdout)["runs"][0]
                status, details = run["status"], run.get("status-details", "")
            except (json.JSONDecodeError, KeyError, IndexError):
                pass
            if status.startswith("finished"):
                break
            time.sleep(1)
        return RunResult(run_id, status, details, output, seconds)

    def kill_site(self, site: str) -> None:
        """SIGKILL a site's SuperNode and its descendants: the site vanishes mid-run."""
        process = self.processes[f"supernode-{site}"]
        kill_tree(process.pid)
        process.wait()

    # -- teardown ------------------------------------------------------------------------
    def stop(self, grace: float = 10) -> None:
        """Stop every process started here, by PID: SuperNodes first, then the SuperLink;
        SIGTERM, then SIGKILL whatever (with descendants) is left after ``grace`` seconds."""
        order = sorted(self.processes, key=lambda name: name == "superlink")
        trees = {name: descendants(self.processes[name].pid) for name in order}
        for name in order:
            if self.processes[name].poll() is None:
                self.processes[name].send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for name in order:
            try:
                self.processes[name].wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                pass
        for name in order:
            for pid in [*trees[name], *descendants(self.processes[name].pid), self.processes[name].pid]:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            self.processes[name].wait()

    def __enter__(self) -> LocalPilot:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def copy_app(project_root: Path, target: Path) -> Path:
    """The Flower app ``flwr run`` packages: ``pyproject.toml`` and the package only
    (not outputs, results or a virtual environment)."""
    target.mkdir(parents=True, exist_ok=True)
    shutil.copy2(project_root / "pyproject.toml", target / "pyproject.toml")
    shutil.copytree(project_root / "pgsl_flower", target / "pgsl_flower",
                    ignore=shutil.ignore_patterns("__pycache__"), dirs_exist_ok=True)
    return target
