"""A client that fails or sends a bad payload mid-round is dropped; the run goes on."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message

from pgsl_flower import protocol
from pgsl_flower.client_app import build_client_app
from pgsl_flower.config import RunConfig
from pgsl_flower.simulation import simulate

CFG = RunConfig(num_rounds=2, samples_per_client=300, batch_size=32, test_samples=300, local_eval_samples=32, seed=3)


def _fault_mod(mode: str):
    """A Flower mod: partition 1 misbehaves at its 4th training message of round 1."""

    def mod(message: Message, context: Context, call_next) -> Message:  # noqa: ANN001
        reply = call_next(message, context)
        if (
            context.node_config["partition-id"] != 1
            or message.metadata.message_type != protocol.TRAIN_STEP
            or not message.metadata.group_id.startswith("round-1.")
        ):
            return reply
        calls = int(context.state["fault"]["calls"]) + 1 if "fault" in context.state else 1
        context.state["fault"] = ConfigRecord({"calls": calls})
        if calls == 4 and mode == "raise":
            raise RuntimeError("site lost its disk")
        if calls == 4 and mode in ("nan", "oversized"):
            name = protocol.batch_record(0)
            batch = reply.content[name]
            h = batch["h"].numpy().copy()
            if mode == "nan":
                h[0, 0, 0, 0] = np.nan
            else:  # oversized: 10.0 MiB of smashed data against an 8 MiB cap
                h = np.zeros((209, *h.shape[1:]), dtype=np.float32)
            reply.content[name] = ArrayRecord({"h": Array(h), "labels": batch["labels"]})
        return reply

    return mod


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["raise", "nan", "oversized"])
def test_failing_client_is_dropped_and_run_completes(tmp_path, mode, caplog):
    cfg = CFG.replace(max_payload_mb=8.0)  # a normal batch is 1.6 MB
    app = build_client_app(cfg, mods=[_fault_mod(mode)])
    summary = simulate(cfg, num_clients=3, run_dir=tmp_path, client_app=app)
    expected = {"raise": "site lost its disk", "nan": "contains NaN or inf", "oversized": "exceeds the cap"}[mode]
    assert any("dropped for this round" in r.getMessage() and expected in r.getMessage() for r in caplog.records)
    with (tmp_path / "metrics.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert int(rows[0]["failed_clients"]) == 1 and int(rows[0]["clients"]) == 2
    assert int(rows[1]["failed_clients"]) == 0  # it rejoins in the next round
    assert summary["final_test_accuracy"] > 0.25  # chance is 0.1; two tiny rounds


def test_quorum_loss_stops_the_run(tmp_path):
    cfg = CFG.replace(min_available_clients=3, num_rounds=1)
    app = build_client_app(cfg, mods=[_fault_mod("raise")])
    with pytest.raises(Exception, match="min-available-clients"):
        simulate(cfg, num_clients=3, run_dir=tmp_path, client_app=app)
    assert not (tmp_path / "summary.json").exists()
