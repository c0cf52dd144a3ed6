"""Checkpoints: a run killed mid-way and resumed ends where a straight run ends."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from pgsl_flower import checkpoint
from pgsl_flower.checkpoint import CheckpointError
from pgsl_flower.config import RunConfig
from pgsl_flower.simulation import simulate

NUM_CLIENTS = 3


def _cfg(tmp_path: Path) -> RunConfig:
    return RunConfig(
        num_rounds=3, samples_per_client=320, batch_size=64, local_eval_samples=32, test_samples=256,
        seed=5, output_dir=str(tmp_path / "outputs"), max_in_flight=2,
    )


def _run_config_arg(cfg: RunConfig) -> str:
    def value(v: object) -> str:
        return f'"{v}"' if isinstance(v, str) else repr(v)

    return " ".join(f"{key}={value(v)}" for key, v in cfg.as_run_config().items())


def _kill_after_round(cfg: RunConfig, run_dir: Path, round_num: int) -> None:
    """Start the run in its own process group; SIGKILL the group once round ``round_num``'s
    checkpoint is on disk (the next round is then under way)."""
    command = [sys.executable, "-m", "pgsl_flower", "--num-clients", str(NUM_CLIENTS),
               "--run-dir", str(run_dir), "--run-config", _run_config_arg(cfg)]
    process = subprocess.Popen(command, start_new_session=True, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and process.poll() is None:
            path = run_dir / checkpoint.SERVER_CHECKPOINT
            if path.exists() and checkpoint.load(path)["round"] >= round_num:
                break
            time.sleep(0.05)
        assert process.poll() is None, "the run ended before it could be killed"
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def _final_state(run_dir: Path) -> dict[str, torch.Tensor]:
    saved = torch.load(run_dir / "final_model.pt", weights_only=True)
    return {f"{part}.{k}": v for part, state in saved.items() for k, v in state.items()}


def _rows(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "metrics.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.slow
def test_killed_run_resumes_to_the_straight_runs_final_state(tmp_path):
    cfg = _cfg(tmp_path)
    straight = tmp_path / "straight"
    simulate(cfg, NUM_CLIENTS, run_dir=straight)

    killed = tmp_path / "killed"
    _kill_after_round(cfg, killed, 1)
    assert not (killed / "summary.json").exists()
    assert checkpoint.load(killed / checkpoint.SERVER_CHECKPOINT)["round"] in (1, 2)
    summary = simulate(cfg.replace(resume_from=str(killed)), NUM_CLIENTS)

    assert summary["run_dir"] == str(killed.resolve())
    expected, resumed = _final_state(straight), _final_state(killed)
    assert expected.keys() == resumed.keys()
    for key, tensor in expected.items():
        assert torch.equal(tensor, resumed[key]), f"{key} differs after resuming"
    rows, straight_rows = _rows(killed), _rows(straight)
    assert [r["round"] for r in rows] == ["1", "2", "3"]
    for row, reference in zip(rows, straight_rows, strict=True):
        assert row["test_accuracy"] == reference["test_accuracy"]
        assert row["train_loss"] == reference["train_loss"]


def test_resume_refuses_a_different_configuration(tmp_path):
    run_dir = tmp_path / "run"
    cfg = RunConfig(num_rounds=2, output_dir=str(tmp_path))
    checkpoint.atomic_save({"round": 1, "config": cfg.as_run_config()}, run_dir / checkpoint.SERVER_CHECKPOINT)
    from pgsl_flower.server_app import load_resume_checkpoint

    with pytest.raises(CheckpointError, match="run-config 'lr' is 0.01"):
        load_resume_checkpoint(cfg.replace(lr=0.01, resume_from=str(run_dir)))
    with pytest.raises(CheckpointError, match="nothing left to run"):
        load_resume_checkpoint(cfg.replace(num_rounds=1, resume_from=str(run_dir)))
    assert load_resume_checkpoint(cfg.replace(num_rounds=5, resume_from=str(run_dir)))["round"] == 1
    (run_dir / checkpoint.SERVER_CHECKPOINT).write_bytes(b"truncated")
    with pytest.raises(CheckpointError, match="unreadable"):
        load_resume_checkpoint(cfg.replace(resume_from=str(run_dir)))
    with pytest.raises(CheckpointError, match="does not exist"):
        load_resume_checkpoint(cfg.replace(resume_from=str(tmp_path / "nowhere")))


def test_atomic_save_keeps_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "state.pt"
    checkpoint.atomic_save({"round": 1}, path)

    class Unpicklable:
        def __reduce__(self):  # noqa: ANN204
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        checkpoint.atomic_save({"round": 2, "bad": Unpicklable()}, path)
    assert checkpoint.load(path)["round"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["state.pt"]  # no temporary file left


def test_site_keeps_its_two_newest_rounds_and_reloads_the_right_one(tmp_path):
    for round_num in (1, 2, 3):
        checkpoint.save_client_state(tmp_path, 4, round_num, {"batch-counter": 10 * round_num})
    checkpoint.save_client_state(tmp_path, 5, 1, {"batch-counter": 7})
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "partition-4.round-2.pt", "partition-4.round-3.pt", "partition-5.round-1.pt"]
    assert checkpoint.load_client_state(tmp_path, 4, 2)["batch-counter"] == 20
    assert checkpoint.load_client_state(tmp_path, 5, 2)["batch-counter"] == 7  # not sampled in round 2
    with pytest.raises(CheckpointError, match="partition 4: no state of round <= 1"):
        checkpoint.load_client_state(tmp_path, 4, 1)
