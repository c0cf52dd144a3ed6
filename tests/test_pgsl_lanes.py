"""PGSL's towers in two CPU lanes (``pgsl/lanes.py``): the same step as one after another."""

from __future__ import annotations

import pytest
import torch

from pgsl_flower.config import ConfigError, RunConfig
from pgsl_flower.pgsl.lanes import dropouts, lane_threads
from pgsl_flower.pgsl.server_model import LANES_ENV, PGSLServerModel, two_lanes_enabled
from pgsl_flower.simulation import preflight


def _server() -> PGSLServerModel:
    torch.manual_seed(0)
    return PGSLServerModel(RunConfig(defense="pgsl", pgsl_max_iter=5), 10, torch.device("cpu"))


def _batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    sizes = (16, 16, 5)  # a short last batch: the dropout shapes are per input shape
    return [(torch.randn(n, 64, 14, 14, generator=g), torch.randint(0, 10, (n,), generator=g)) for n in sizes]


def _train(server: PGSLServerModel, threads: int) -> tuple[list, dict[str, torch.Tensor], torch.Tensor]:
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        torch.manual_seed(7)
        outputs = [server.step(h, y) for h, y in _batches()]
        next_draw = torch.rand(4)  # the global RNG after the steps
    finally:
        torch.set_num_threads(previous)
    return outputs, server.model.state_dict(), next_draw


def test_two_lanes_are_bit_identical_to_the_sequential_step_on_one_thread():
    # One thread: the sequential step. Two threads: two lanes of one thread each, so every
    # kernel runs on one thread in both, and the results must agree bit for bit.
    assert lane_threads(2) == (1, 1)
    sequential = _train(_server(), threads=1)
    lanes = _train(_server(), threads=2)

    for (grad_s, loss_s, pred_s), (grad_l, loss_l, pred_l) in zip(sequential[0], lanes[0]):
        assert torch.equal(grad_s, grad_l)  # dL/dh sent to the client
        assert loss_s == loss_l
        assert torch.equal(pred_s, pred_l)
    assert sequential[1].keys() == lanes[1].keys()
    for key, value in sequential[1].items():  # weights after Adam, BatchNorm running statistics
        assert torch.equal(value, lanes[1][key]), key
    assert torch.equal(sequential[2], lanes[2])  # the dropout masks drew the same random stream


def test_the_lanes_use_dropout_and_restore_it():
    server = _server()
    towers = server.model.towers
    assert all(len(dropouts(towers[name])) == 2 for name in towers)  # after conv3 and conv6
    h, y = _batches()[0]
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        torch.manual_seed(3)
        first = server.step(h, y)[0]
        server.model.load_state_dict(_server().model.state_dict())
        torch.manual_seed(4)
        second = server.step(h, y)[0]
    finally:
        torch.set_num_threads(previous)
    assert not torch.equal(first, second)  # other masks, other gradient: dropout is live
    for name in towers:
        assert all("forward" not in vars(m) for m in dropouts(towers[name])), name


def test_an_error_in_the_worker_lane_reaches_the_caller_and_leaves_the_towers_as_they_were():
    server = _server()
    h, y = _batches()[0]

    def fail(*_):
        raise RuntimeError("attacked tower failed")

    hook = server.model.towers["attacked"].register_forward_hook(fail)
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with pytest.raises(RuntimeError, match="attacked tower failed"):
            server.step(h, y)
        hook.remove()
        for tower in server.model.towers.values():
            assert all("forward" not in vars(m) for m in dropouts(tower))
        grad, loss_sum, _ = server.step(h, y)  # the next step runs
    finally:
        torch.set_num_threads(previous)
    assert torch.isfinite(grad).all() and loss_sum > 0


def test_lane_threads_split_the_threads():
    assert lane_threads(2) == (1, 1)
    assert lane_threads(3) == (1, 2)
    assert lane_threads(16) == (8, 8)
    with pytest.raises(ValueError, match="at least 2"):
        lane_threads(1)


def test_the_environment_switches_the_lanes_and_a_bad_value_is_refused(monkeypatch):
    monkeypatch.delenv(LANES_ENV, raising=False)
    assert two_lanes_enabled() and _server().two_lanes
    monkeypatch.setenv(LANES_ENV, "0")
    assert not _server().two_lanes
    monkeypatch.setenv(LANES_ENV, "yes")
    with pytest.raises(ConfigError, match="PGSL_TWO_LANES must be 0 or 1, got 'yes'"):
        _server()
    with pytest.raises(ConfigError, match="PGSL_TWO_LANES"):  # before Ray starts
        preflight(RunConfig(defense="pgsl", samples_per_client=50), 2)
