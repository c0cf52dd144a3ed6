"""Real Flower simulations (Ray backend) on real MNIST subsets."""

from __future__ import annotations

import csv
import logging
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pgsl_flower.config import ConfigError
from pgsl_flower.data import resolve_data_root
from pgsl_flower.metrics import METRIC_COLUMNS
from pgsl_flower.simulation import simulate

ROOT = Path(__file__).resolve().parents[1]
SMALL = {
    "num-rounds": 3,
    "samples-per-client": 600,
    "batch-size": 32,
    "test-samples": 1000,
    "local-eval-samples": 32,
}


def _rows(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "metrics.csv").open() as handle:
        return list(csv.DictReader(handle))


@pytest.mark.slow
@pytest.mark.parametrize("schedule", ["splitfed", "sequential"])
def test_simulation_learns_well_above_chance(tmp_path, schedule, caplog):
    caplog.set_level(logging.INFO, logger="flwr")
    summary = simulate({**SMALL, "schedule": schedule, "seed": 1}, num_clients=3, run_dir=tmp_path)
    # Records, not streams: Flower's handler keeps the stderr object of import time, which
    # pytest's stream capture may not see; records reach caplog through propagation.
    messages = [record.getMessage() for record in caplog.records if record.name == "flwr"]
    assert any("round 3/3: test acc" in m for m in messages)  # Flower's log is captured ...
    assert not any("DEPRECATED FEATURE" in m for m in messages)  # ... without run_simulation's notice
    rows = _rows(tmp_path)
    assert [int(r["round"]) for r in rows] == [1, 2, 3]
    assert set(rows[0]) == set(METRIC_COLUMNS)
    final = float(rows[-1]["test_accuracy"])
    assert summary["final_test_accuracy"] == pytest.approx(final)
    assert final > 0.8, f"{schedule}: final test accuracy {final}"  # chance is 0.1
    assert float(rows[-1]["local_accuracy_mean"]) > 0.6
    assert all(int(r["clients"]) == 3 and int(r["failed_clients"]) == 0 for r in rows)
    # Up: at least the smashed data of every sample (64*14*14 float32); down: the same in dL/dh.
    smashed_bytes = int(rows[0]["samples"]) // 3 * 64 * 14 * 14 * 4
    assert int(rows[0]["bytes_up_per_client"]) >= smashed_bytes
    assert int(rows[0]["bytes_down_per_client"]) >= smashed_bytes
    assert (tmp_path / "config.json").exists()


def test_bad_config_fails_before_ray_starts(tmp_path):
    import ray

    with pytest.raises(ConfigError, match="'batch-size'"):
        simulate({"batch-size": 0}, num_clients=2, run_dir=tmp_path)
    with pytest.raises(ConfigError, match="num-clients must be >= 1"):
        simulate({}, num_clients=0, run_dir=tmp_path)
    with pytest.raises(ConfigError, match="'schedule'"):
        simulate({"schedule": "ring"}, num_clients=2, run_dir=tmp_path)
    assert not ray.is_initialized()
    assert not (tmp_path / "metrics.csv").exists()


def test_cli_reports_bad_value_and_exits_2():
    proc = subprocess.run(
        [sys.executable, "-m", "pgsl_flower", "--num-clients", "2", "-c", "dataset='cifar'"],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )
    assert proc.returncode == 2
    assert "'dataset' must be one of" in proc.stderr


def _superlink_pids(flwr_home: Path) -> list[int]:
    out = subprocess.run(["pgrep", "-f", f"flower-superlink.*{flwr_home}"], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


@pytest.mark.slow
def test_flwr_run_local_simulation(tmp_path):
    """`flwr run . --stream` on a local SuperLink; the SuperLink is stopped by PID."""
    flwr_home = tmp_path / "flwr-home"
    out_dir = tmp_path / "outputs"
    env = {
        **os.environ,
        "FLWR_HOME": str(flwr_home),
        "PGSL_DATA_DIR": str(resolve_data_root()),
        "FLWR_LOCAL_SUPERLINK_HTTP_API_PORT": "39191",
        "FLWR_LOCAL_CONTROL_API_PORT": "39193",
        "FLWR_DISABLE_UPDATE_CHECK": "1",
        "RAY_ADDRESS": "local",  # Flower's ray.init() would join a cluster `ray start` left on this machine
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    flwr = Path(sys.executable).with_name("flwr")
    cmd = [
        str(flwr), "run", ".", "--stream",
        "--federation-config", "num-supernodes=2",
        "--run-config", f"num-rounds=1 samples-per-client=300 test-samples=500 output-dir='{out_dir}'",
    ]
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=420)
        log = proc.stdout + proc.stderr
        assert proc.returncode == 0, log[-4000:]
        assert re.search(r"round 1/1: test acc", log), log[-4000:]
        runs = list(out_dir.glob("*/metrics.csv"))
        assert len(runs) == 1, log[-2000:]
        assert len(_rows(runs[0].parent)) == 1
    finally:
        for pid in _superlink_pids(flwr_home):
            try:
                os.killpg(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 30
        while _superlink_pids(flwr_home) and time.monotonic() < deadline:
            time.sleep(0.5)
        for pid in _superlink_pids(flwr_home):
            os.killpg(pid, signal.SIGKILL)
    assert not _superlink_pids(flwr_home)


@pytest.mark.slow
def test_mias_runs_end_to_end(tmp_path):
    """Mini-MIAS (3 classes) at 32x32 through the same protocol: smashed data 64x16x16."""
    cfg = {"dataset": "mias", "image-size": 32, "num-rounds": 2, "batch-size": 16,
           "samples-per-client": 0, "local-eval-samples": 8, "seed": 2}
    summary = simulate(cfg, num_clients=2, run_dir=tmp_path)
    rows = _rows(tmp_path)
    assert len(rows) == 2 and summary["clients"] == 2
    assert summary["train_samples"] == 2 * (136 - 14)  # 272 training images, 10% held out per client
    assert int(rows[0]["bytes_up_per_client"]) >= int(rows[0]["samples"]) // 2 * 64 * 16 * 16 * 4
    assert 0.0 <= float(rows[-1]["test_accuracy"]) <= 1.0


@pytest.mark.slow
def test_pgsl_simulation_trains_all_three_streams(tmp_path, monkeypatch):
    monkeypatch.setenv("PGSL_CACHE_DIR", str(tmp_path / "cache"))
    cfg = {**SMALL, "defense": "pgsl", "seed": 4}
    simulate(cfg, num_clients=3, run_dir=tmp_path / "run")
    rows = _rows(tmp_path / "run")
    final = rows[-1]
    streams = {name: float(final[f"test_acc_{name}"]) for name in ("recovered", "fused", "attacked")}
    assert all(value > 0.2 for value in streams.values()), streams  # chance is 0.1
    assert streams["fused"] > 0.8, streams
    assert 0.0 <= float(final["test_accuracy"]) <= 1.0
    assert list((tmp_path / "cache" / "attacks").glob("*.pt"))  # attacks cached by content


def test_bad_client_priority_fails_before_ray_starts(tmp_path):
    import ray

    from pgsl_flower.client_app import build_client_app

    with pytest.raises(ConfigError, match="client-priority must be one of"):
        simulate({}, num_clients=2, run_dir=tmp_path, client_priority="low")
    with pytest.raises(ConfigError, match="standard ClientApp"):
        simulate({}, num_clients=2, run_dir=tmp_path, client_app=build_client_app(), client_priority="idle")
    assert not ray.is_initialized()


@pytest.mark.slow
def test_idle_priority_clients_run_at_sched_idle_and_change_no_result(tmp_path):
    """The mod really reaches the Ray actors' threads, and the run's numbers are those of
    the run at normal priority (scheduling changes no arithmetic)."""
    from pgsl_flower.client_app import build_client_app
    from pgsl_flower.config import parse_run_config
    from pgsl_flower.cpu_scheduling import idle_priority_mod

    cfg = parse_run_config({**SMALL, "num-rounds": 1, "samples-per-client": 200, "test-samples": 200, "seed": 3})
    policies = tmp_path / "policies.txt"

    def record_policy(message, context, call_next):
        with policies.open("a") as handle:
            handle.write(f"{os.sched_getscheduler(0)}\n")
        return call_next(message, context)

    normal = simulate(cfg, num_clients=2, run_dir=tmp_path / "normal")
    idle = simulate(cfg, num_clients=2, run_dir=tmp_path / "idle",
                    client_app=build_client_app(cfg, mods=[idle_priority_mod, record_policy]))
    seen = policies.read_text().split()
    assert len(seen) > 10 and set(seen) == {str(os.SCHED_IDLE)}
    assert _rows(tmp_path / "idle") and [
        {k: r[k] for k in ("test_accuracy", "test_loss", "train_loss", "samples")} for r in _rows(tmp_path / "idle")
    ] == [{k: r[k] for k in ("test_accuracy", "test_loss", "train_loss", "samples")} for r in _rows(tmp_path / "normal")]
    assert idle["final_test_accuracy"] == normal["final_test_accuracy"]
