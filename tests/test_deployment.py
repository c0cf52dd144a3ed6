"""A real deployment on 127.0.0.1: flower-superlink with TLS and SuperNode
authentication, three flower-supernode processes each on its own site folder
(MNIST subsets), two rounds of split learning; one site is killed mid-run and
the run still completes. Every process is stopped by PID, pass or fail."""

from __future__ import annotations

import csv
import json
import threading
import time
from pathlib import Path

import pytest

from pgsl_flower import checkpoint
from pgsl_flower.data import load_dataset, resolve_data_root
from pgsl_flower.data.site_folder import write_site_folder
from pgsl_flower.pilot.local import (
    DEFAULT_TASK_POLL_INTERVAL,
    TASK_POLL_ENV,
    THREADS_ENV,
    LocalPilot,
    copy_app,
    threads_per_process,
)

ROOT = Path(__file__).resolve().parents[1]
SITES = ("site-a", "site-b", "site-c")
PER_SITE = 160  # 16 held out, 144 train: 4 batches of 32, one message with batches-per-message = 4


def _site_folders(tmp_path: Path) -> dict[str, Path]:
    """PER_SITE consecutive MNIST training images per site, one folder each."""
    train, _ = load_dataset("mnist", None)
    return {
        name: write_site_folder(train, range(k * PER_SITE, (k + 1) * PER_SITE), tmp_path / "data" / name)
        for k, name in enumerate(SITES)
    }


def _kill_when_round_done(pilot: LocalPilot, output_dir: Path, site: str, round_num: int, killed: list) -> None:
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        for path in output_dir.glob(f"*/{checkpoint.SERVER_CHECKPOINT}"):
            if checkpoint.load(path)["round"] >= round_num:
                pilot.kill_site(site)
                killed.append(time.monotonic())
                return
        time.sleep(0.2)


@pytest.mark.slow
def test_pilot_with_tls_and_auth_survives_a_lost_site(tmp_path):
    sites = _site_folders(tmp_path)
    output_dir = tmp_path / "server-outputs"
    pilot = LocalPilot(tmp_path / "pilot", sites, copy_app(ROOT, tmp_path / "app"),
                       env={"PGSL_DATA_DIR": str(resolve_data_root())})  # threads: "auto"
    try:
        pilot.start()
        # a SuperNode whose key was never registered, and one without TLS, are refused
        code, log = pilot.try_rogue_supernode("intruder", tls=True)
        assert code not in (None, 0) and "SuperNode ID:" not in log, log[-2000:]
        code, log = pilot.try_rogue_supernode("plaintext", tls=False)
        assert code not in (None, 0) and "SuperNode ID:" not in log, log[-2000:]

        killed: list[float] = []
        watcher = threading.Thread(target=_kill_when_round_done, args=(pilot, output_dir, "site-c", 1, killed),
                                   daemon=True)
        watcher.start()
        result = pilot.run({
            "num-rounds": 2, "batch-size": 32, "samples-per-client": 0, "local-eval-samples": 16,
            "test-samples": 500, "batches-per-message": 4, "min-available-clients": 2,
            "reply-timeout": 240.0, "output-dir": str(output_dir),
        })
        watcher.join(timeout=5)
    finally:
        pilot.stop()

    assert killed, "site-c was never killed: round 1 did not complete"
    assert result.status == "finished:completed", f"{result.status}: {result.details}\n{result.log[-4000:]}"
    assert "(site-c) dropped for this round" in result.log
    (run_dir,) = output_dir.iterdir()
    assert json.loads((run_dir / "config.json").read_text())["site-names"] == list(SITES)
    # the ServerApp (started by the SuperLink's SuperExec) ran with the pilot's share of the cores
    assert json.loads((run_dir / "summary.json").read_text())["server_torch_threads"] == threads_per_process(4)
    with (run_dir / "metrics.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["clients"], r["failed_clients"]) for r in rows] == [("3", "0"), ("2", "1")]
    # two train.step messages (4 batches, then the weights back), then BatchNorm recalibration (on by default): the
    # moments of the client part's two BN layers and the calibration smashed data
    assert int(rows[0]["samples"]) == 3 * 4 * 32 and int(rows[0]["messages_per_client"]) == 2 + 2 + 1
    assert float(rows[-1]["train_accuracy"]) > 0.3  # chance is 0.1
    assert checkpoint.load(run_dir / checkpoint.SERVER_CHECKPOINT)["round"] == 2
    # each site wrote its own state (optimizer, counter) at home, none of it on the server
    for partition, site in enumerate(SITES):
        state = pilot.workdir / "site-state" / site / run_dir.name / f"partition-{partition}.round-1.pt"
        assert state.exists(), state
        # and kept its decoded images in its own cache-dir: one entry (reuse is tested in test_site_cache.py)
        (entry,) = (pilot.workdir / "site-cache" / site).glob("*.npz")
        assert entry.name.startswith(f"site-{site}-{partition}-")


def test_pilot_sets_the_superexec_task_poll_interval(tmp_path, monkeypatch):
    """LocalPilot passes FLWR_SUPEREXEC_TASK_POLL_INTERVAL to the processes it starts (the SuperNode's
    SuperExec inherits it); None leaves Flower's default; a value Flower would refuse fails here."""
    monkeypatch.delenv(TASK_POLL_ENV, raising=False)
    sites = {"site-a": tmp_path}
    assert LocalPilot(tmp_path, sites, tmp_path)._env()[TASK_POLL_ENV] == str(DEFAULT_TASK_POLL_INTERVAL)
    assert LocalPilot(tmp_path, sites, tmp_path, task_poll_interval=0.5)._env()[TASK_POLL_ENV] == "0.5"
    assert TASK_POLL_ENV not in LocalPilot(tmp_path, sites, tmp_path, task_poll_interval=None)._env()
    for bad in (0.001, 61.0, float("nan")):
        with pytest.raises(ValueError, match=f"task_poll_interval = {bad!r}: Flower's {TASK_POLL_ENV} must be in"):
            LocalPilot(tmp_path, sites, tmp_path, task_poll_interval=bad)


def test_pilot_shares_the_cores_among_its_processes(tmp_path, monkeypatch):
    """Every process LocalPilot starts gets OMP_NUM_THREADS (torch's intra-op threads): by default the
    machine's cores shared among the ServerApp and the sites, at least one each; an explicit count; None
    leaves torch's default; the caller's env wins; anything else is refused before a process starts."""
    monkeypatch.delenv(THREADS_ENV, raising=False)
    assert threads_per_process(4, cores=2) == 1 and threads_per_process(3, cores=16) == 5
    assert threads_per_process(1, cores=8) == 8
    with pytest.raises(ValueError, match="processes = 0"):
        threads_per_process(0)
    sites = {"site-a": tmp_path, "site-b": tmp_path}
    assert LocalPilot(tmp_path, sites, tmp_path)._env()[THREADS_ENV] == str(threads_per_process(3))
    assert LocalPilot(tmp_path, sites, tmp_path, threads=3)._env()[THREADS_ENV] == "3"
    assert THREADS_ENV not in LocalPilot(tmp_path, sites, tmp_path, threads=None)._env()
    assert LocalPilot(tmp_path, sites, tmp_path, threads=3, env={THREADS_ENV: "2"})._env()[THREADS_ENV] == "2"
    for bad in (0, -1, 1.5, True, "4"):
        with pytest.raises(ValueError, match=f"LocalPilot threads = {bad!r}: a positive int"):
            LocalPilot(tmp_path, sites, tmp_path, threads=bad)


@pytest.mark.slow
def test_pilot_with_site_workers_and_two_messages_in_flight(tmp_path):
    """Each site runs a long-lived worker (node-config 'site-worker') that handles every
    message its SuperNode gets, and the server keeps two training messages out to each site
    (run-config 'messages-in-flight' = 2). Two rounds complete and learn."""
    sites = _site_folders(tmp_path)
    output_dir = tmp_path / "server-outputs"
    with LocalPilot(tmp_path / "pilot", sites, copy_app(ROOT, tmp_path / "app"),
                    env={"PGSL_DATA_DIR": str(resolve_data_root())}, site_workers=True) as pilot:
        pilot.start()
        result = pilot.run({
            "num-rounds": 2, "batch-size": 32, "samples-per-client": 0, "local-eval-samples": 16,
            "test-samples": 500, "batches-per-message": 2, "messages-in-flight": 2, "min-available-clients": 3,
            "reply-timeout": 240.0, "output-dir": str(output_dir),
        })
        worker_logs = {site: pilot.log_text(f"worker-{site}") for site in SITES}
    assert result.status == "finished:completed", f"{result.status}: {result.details}\n{result.log[-4000:]}"
    (run_dir,) = output_dir.iterdir()
    with (run_dir / "metrics.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["clients"], r["failed_clients"]) for r in rows] == [("3", "0"), ("3", "0")]
    # 4 batches a round: two messages of 2 sent at once, then both messages' gradients with the
    # request for the weights; then BatchNorm recalibration (two layers' moments, the smashed data)
    assert int(rows[0]["samples"]) == 3 * 4 * 32 and int(rows[0]["messages_per_client"]) == 3 + 2 + 1
    assert float(rows[-1]["train_accuracy"]) > 0.3  # chance is 0.1
    for site, log in worker_logs.items():
        # every message of the run went through the site's worker, none failed there
        assert log.count("train.step for node") == 2 * 3, f"{site}:\n{log[-3000:]}"
        assert log.count("query.info for node") == 1 and log.count("evaluate for node") == 2, log[-3000:]
        assert ": error in" not in log, log[-3000:]
