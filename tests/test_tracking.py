"""Run-config 'tracking': TensorBoard event files, read back with TensorBoard's own reader."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import api_pb2, plugin_data_pb2

from pgsl_flower.metrics import METRIC_COLUMNS
from pgsl_flower.simulation import simulate
from pgsl_flower.tracking import TENSORBOARD_DIR, open_tracker, round_scalars, scalar_tag


def _events(log_dir: Path) -> EventAccumulator:
    events = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    return events


def _scalars(events: EventAccumulator) -> dict[str, list[tuple[int, float]]]:
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def _hparams(events: EventAccumulator) -> tuple[plugin_data_pb2.SessionStartInfo, plugin_data_pb2.SessionEndInfo]:
    """The hparams plugin's session start and end."""
    content = events.PluginTagToContent("hparams")
    start, end = (plugin_data_pb2.HParamsPluginData.FromString(content[f"_hparams_/session_{part}_info"])
                  for part in ("start", "end"))
    return start.session_start_info, end.session_end_info


def _row(round_num: int, **changes: object) -> dict[str, object]:
    row: dict[str, object] = {column: float(i) + round_num / 10 for i, column in enumerate(METRIC_COLUMNS)}
    return {**row, "round": round_num, "samples": 480, "test_acc_fused": "", **changes}


def test_scalar_tags_group_metrics_csv_columns():
    assert scalar_tag("test_accuracy") == "test/accuracy"
    assert scalar_tag("test_acc_fused") == "test/acc_fused"
    assert scalar_tag("train_loss") == "train/loss"
    assert scalar_tag("train_seconds") == "run/train_seconds"
    assert scalar_tag("local_balanced_accuracy") == "local/balanced_accuracy"
    assert scalar_tag("bytes_up_per_client") == "run/bytes_up_per_client"
    assert scalar_tag("epsilon") == "run/epsilon"
    tags = [scalar_tag(c) for c in METRIC_COLUMNS if c != "round"]
    assert len(set(tags)) == len(tags)
    # empty cells (a stream without PGSL, epsilon without DP-SGD) are left out; the round is the step
    assert set(round_scalars(_row(1))) == set(tags) - {"test/acc_fused"}


def test_none_writes_nothing(tmp_path):
    with open_tracker("none", tmp_path) as tracker:
        tracker.log_config({"seed": 1})
        tracker.log_round(_row(1))
    assert not (tmp_path / TENSORBOARD_DIR).exists()


def test_failed_run_closes_the_writer_and_marks_the_session_failed(tmp_path):
    with pytest.raises(RuntimeError, match="round 2 broke"):
        with open_tracker("tensorboard", tmp_path) as tracker:
            tracker.log_config({"seed": 1, "partition-order": [0, 1]})
            tracker.log_round(_row(1))
            raise RuntimeError("round 2 broke")
    assert tracker.writer.all_writers is None  # SummaryWriter.close() ran
    events = _events(tmp_path / TENSORBOARD_DIR)
    assert _scalars(events)["test/accuracy"] == [(1, pytest.approx(_row(1)["test_accuracy"]))]
    start, end = _hparams(events)
    assert end.status == api_pb2.STATUS_FAILURE
    assert start.hparams["partition-order"].string_value == "[0, 1]"


def test_resumed_run_replaces_the_interrupted_rounds_events(tmp_path):
    with open_tracker("tensorboard", tmp_path) as tracker:
        for round_num in (1, 2):  # round 2's row was written, then the run was killed before its checkpoint
            tracker.log_round(_row(round_num, test_loss=9.0))
    with open_tracker("tensorboard", tmp_path, first_round=2) as tracker:  # resumed after round 1
        for round_num in (2, 3):
            tracker.log_round(_row(round_num, test_loss=1.0))
    assert _scalars(_events(tmp_path / TENSORBOARD_DIR))["test/loss"] == [(1, 9.0), (2, 1.0), (3, 1.0)]


@pytest.mark.slow
def test_simulation_writes_metrics_and_config_to_tensorboard(tmp_path):
    cfg = {"num-rounds": 2, "samples-per-client": 160, "batch-size": 32, "test-samples": 200,
           "local-eval-samples": 16, "seed": 6, "tracking": "tensorboard"}
    simulate(cfg, num_clients=2, run_dir=tmp_path)
    with (tmp_path / "metrics.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["round"]) for r in rows] == [1, 2]
    events = _events(tmp_path / TENSORBOARD_DIR)
    scalars = _scalars(events)
    expected = {scalar_tag(column) for column in METRIC_COLUMNS if column != "round" and rows[0][column] != ""}
    assert set(scalars) == expected  # every numeric metrics.csv column, nothing else
    assert {"test/accuracy", "test/balanced_accuracy", "test/loss", "run/bytes_up_per_client",
            "run/round_seconds"} <= expected
    for column in METRIC_COLUMNS:
        if scalar_tag(column) in scalars:  # one value per round, the round as step, as in metrics.csv
            assert scalars[scalar_tag(column)] == [
                (int(r["round"]), pytest.approx(float(r[column]), rel=1e-6)) for r in rows
            ], column
    (text,) = events.Tensors("config/text_summary")
    config_text = text.tensor_proto.string_val[0].decode()
    assert config_text.startswith("```json\n")
    assert json.loads(config_text.strip("`").removeprefix("json\n")) == json.loads(
        (tmp_path / "config.json").read_text())
    start, end = _hparams(events)
    assert start.hparams["tracking"].string_value == "tensorboard"
    assert start.hparams["num-rounds"].number_value == 2
    assert end.status == api_pb2.STATUS_SUCCESS
