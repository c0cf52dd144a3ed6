"""The composable API: SplitFed / SequentialSplit ``.start`` in a ServerApp of one's own."""

from __future__ import annotations

import csv
import importlib
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from flwr.app import ArrayRecord

from pgsl_flower import SequentialSplit, SplitFed, SplitResult
from pgsl_flower.config import ConfigError, RunConfig
from pgsl_flower.model import build_client_net, build_server_net

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "custom_server_app"
TINY = {"samples-per-client": 64, "test-samples": 64, "local-eval-samples": 16, "batch-size": 32}


class _Stop(Exception):
    """Raised by the stand-in trainer: the run got as far as training."""


class _NoGrid:
    """A Grid no test should reach: validation must fail before any node is contacted."""

    run = SimpleNamespace(run_id=0)

    def get_node_ids(self) -> list[int]:
        raise AssertionError("the Grid was used before initial_arrays were checked")


class _OneNodeGrid(_NoGrid):
    def get_node_ids(self) -> list[int]:
        return [1]


def _client_state(cfg: RunConfig) -> dict[str, torch.Tensor]:
    return build_client_net(cfg, 1).state_dict()


def _server_state(cfg: RunConfig) -> dict[str, torch.Tensor]:
    return build_server_net(cfg, 10).state_dict()


def test_settings_take_run_config_keys_and_the_class_sets_the_schedule():
    strategy = SequentialSplit({"num-rounds": 4, "batch-size": 16}, defense="pgsl", batch_size=8, pgsl_mu=0.3)
    cfg = strategy.config
    assert (cfg.schedule, cfg.defense, cfg.num_rounds, cfg.batch_size, cfg.pgsl_mu) == ("sequential", "pgsl", 4, 8, 0.3)
    assert SplitFed(RunConfig(schedule="sequential")).config.schedule == "splitfed"
    with pytest.raises(ConfigError, match="schedule"):
        SplitFed(schedule="sequential")
    with pytest.raises(ConfigError, match="'batch-size'"):
        SplitFed(batch_size=0)


@pytest.mark.parametrize(
    ("part", "change", "message"),
    [
        ("client", lambda s: {**s, "conv.extra": s[next(iter(s))]},
         r"initial_arrays .*unexpected keys \['conv.extra'\]"),
        ("client", lambda s: dict(list(s.items())[1:]), r"initial_arrays .*missing keys \['" + "{first}"),
        ("client", lambda s: {k: v[:1] if v.ndim else v for k, v in s.items()}, r"initial_arrays\.{first}.*shape"),
        ("server", lambda s: {k: v.double() if v.is_floating_point() else v for k, v in s.items()},
         r"initial_server_arrays\.{first}.*dtype float64"),
    ],
)
def test_bad_initial_arrays_fail_before_the_grid_is_used(tmp_path, part, change, message):
    cfg = SplitFed(TINY).config
    state = _client_state(cfg) if part == "client" else _server_state(cfg)
    bad = ArrayRecord(change(state))
    arrays = {"initial_arrays": bad} if part == "client" else {"initial_server_arrays": bad}
    with pytest.raises(ValueError, match=message.format(first=next(iter(state)).replace(".", r"\."))):
        SplitFed(TINY).start(grid=_NoGrid(), run_dir=tmp_path, **arrays)
    assert not (tmp_path / "metrics.csv").exists()


def test_initial_arrays_must_be_an_array_record(tmp_path):
    state = _client_state(SplitFed(TINY).config)
    with pytest.raises(TypeError, match="initial_arrays must be an ArrayRecord"):
        SplitFed(TINY).start(grid=_NoGrid(), run_dir=tmp_path, initial_arrays=state)  # type: ignore[arg-type]


def test_initial_arrays_seed_both_parts(tmp_path, monkeypatch):
    import pgsl_flower.server_app as server_app

    seen = {}

    def trainer(grid, cfg, server, smashed_shape, num_classes, client_weights):  # noqa: ANN001, ANN202
        seen.update(cfg=cfg, server=server.model.state_dict(), client=client_weights)
        raise _Stop

    monkeypatch.setattr(server_app, "SplitTrainer", trainer)
    cfg = SplitFed(TINY).config
    client = {k: v + 1 if v.is_floating_point() else v for k, v in _client_state(cfg).items()}
    server = {k: v - 1 if v.is_floating_point() else v for k, v in _server_state(cfg).items()}
    with pytest.raises(_Stop):
        SplitFed(TINY).start(grid=_OneNodeGrid(), initial_arrays=ArrayRecord(client), num_rounds=7, timeout=5,
                             initial_server_arrays=ArrayRecord(server), run_dir=tmp_path)
    assert (seen["cfg"].num_rounds, seen["cfg"].reply_timeout) == (7, 5.0)
    for key, value in client.items():
        assert torch.equal(seen["client"][key], value), key
    for key, value in server.items():
        assert torch.equal(seen["server"][key].cpu(), value), key


@pytest.mark.slow
def test_example_server_app_returns_a_result(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLE))
    for name in ("run", "server_app"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    example = importlib.import_module("server_app")
    monkeypatch.setattr(example, "RUN_CONFIG", {**example.RUN_CONFIG, **TINY, "output-dir": str(tmp_path)})
    monkeypatch.setattr(example, "NUM_ROUNDS", 2)

    result = importlib.import_module("run").run(num_clients=2)

    assert isinstance(result, SplitResult)
    assert sorted(result.metrics) == [1, 2]
    for round_num, metrics in result.metrics.items():
        assert metrics["round"] == round_num and metrics["clients"] == 2 and metrics["failed_clients"] == 0
        assert isinstance(metrics["test_accuracy"], float) and 0.0 <= metrics["test_accuracy"] <= 1.0
    assert result.summary["final_test_accuracy"] == result.metrics[2]["test_accuracy"]
    assert result.run_dir.parent == tmp_path
    with (result.run_dir / "metrics.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [float(r["test_accuracy"]) for r in rows] == [result.metrics[n]["test_accuracy"] for n in (1, 2)]
    cfg = SplitFed(example.RUN_CONFIG).config
    for arrays, reference in ((result.arrays, _client_state(cfg)), (result.server_arrays, _server_state(cfg))):
        assert list(arrays) == list(reference)
        assert all(tuple(arrays[k].shape) == tuple(v.shape) for k, v in reference.items())
    # The final arrays seed another run: they pass the same checks as initial_arrays.
    from pgsl_flower.server_app import checked_arrays

    checked_arrays(result.arrays, _client_state(cfg), "initial_arrays", "client part")
