"""BatchNorm statistics of a federated model: re-estimating them after aggregation.

Why (measured in ``results/bn_federation``): a client that takes a few steps a
round moves its BatchNorm running statistics only a little from where the round
started (momentum 0.1: after one step 90 % of the old value remains), and FedAvg
then averages those barely-moved buffers; the server's running statistics follow
the last batches it processed, which under label skew come from the last few
clients. Training uses batch statistics and works; evaluation uses the running
statistics and fails.

The remedy (run-config ``bn-recalibration = "on"``) re-estimates them after each
round's aggregation, with the aggregated weights, on the clients' own training
data, and raw images never leave a client:

- **client part, exactly, layer by layer**: each client returns, for one BN
  layer, the per-channel sum, sum of squares and count of that layer's input over
  its calibration samples (eval mode, earlier layers already re-estimated); the
  server pools them into the population mean and variance
  (:func:`pool_moments`) and moves on to the next layer;
- **server part**: clients send the smashed data (eval mode, as they would
  release it) of their calibration samples, the server shuffles them together
  and recomputes its running statistics as ``torch.optim.swa_utils.update_bn``
  does (a cumulative average over batches of the pooled, mixed data).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["Moments", "batchnorm_layers", "input_moments", "pool_moments", "set_running_stats", "update_bn"]


def batchnorm_layers(module: nn.Module) -> list[str]:
    """Names of the module's BatchNorm layers, in forward (registration) order."""
    return [name for name, child in module.named_modules() if isinstance(child, nn.modules.batchnorm._BatchNorm)]


@dataclass(frozen=True)
class Moments:
    """Per-channel sum and sum of squares of a layer's input, over ``count`` values per channel."""

    total: torch.Tensor  # (C,) float64
    squares: torch.Tensor  # (C,) float64
    count: int


class _Collected(Exception):
    """Raised by the hook once the layer's input is seen: the rest of the forward is not needed."""


@torch.no_grad()
def input_moments(module: nn.Module, layer: str, batches: Iterable[torch.Tensor]) -> Moments:
    """Moments of the input of BN layer ``layer`` over ``batches``, with ``module`` in eval mode
    (every BN before it normalises with its running statistics)."""
    bn = dict(module.named_modules())[layer]
    sums: list[torch.Tensor] = []
    squares: list[torch.Tensor] = []
    count = 0

    def hook(_module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        nonlocal count
        x = args[0].double().transpose(0, 1).flatten(1)  # (C, N*H*W)
        sums.append(x.sum(1))
        squares.append((x * x).sum(1))
        count += x.shape[1]
        raise _Collected

    was_training = module.training
    module.eval()
    handle = bn.register_forward_pre_hook(hook)
    try:
        for batch in batches:
            try:
                module(batch)
            except _Collected:
                pass
    finally:
        handle.remove()
        module.train(was_training)
    if not count:
        raise ValueError("input_moments: no batch was given")
    return Moments(torch.stack(sums).sum(0), torch.stack(squares).sum(0), count)


def pool_moments(parts: Sequence[Moments]) -> tuple[torch.Tensor, torch.Tensor]:
    """Population mean and (biased) variance of the pooled values, float32 (C,) each."""
    if not parts:
        raise ValueError("pool_moments: no moments to pool")
    count = sum(p.count for p in parts)
    mean = sum(p.total for p in parts) / count
    variance = (sum(p.squares for p in parts) / count - mean * mean).clamp_min(0.0)
    return mean.float(), variance.float()


def set_running_stats(state: dict[str, torch.Tensor], layer: str, mean: torch.Tensor, variance: torch.Tensor) -> None:
    """Write a BN layer's running mean and variance into a state dict (in place)."""
    state[f"{layer}.running_mean"] = mean.to(state[f"{layer}.running_mean"].dtype).clone()
    state[f"{layer}.running_var"] = variance.to(state[f"{layer}.running_var"].dtype).clone()


@torch.no_grad()
def update_bn(module: nn.Module, forward: Callable[[torch.Tensor], object], batches: Iterable[torch.Tensor]) -> None:
    """Recompute every BN layer's running statistics of ``module`` as the cumulative average over
    ``batches`` of train-mode batch statistics (``torch.optim.swa_utils.update_bn``'s rule);
    ``forward`` runs one batch through it (e.g. PGSL's three towers)."""
    layers = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not layers:
        return
    momenta = {layer: layer.momentum for layer in layers}
    for layer in layers:
        layer.reset_running_stats()
        layer.momentum = None
    was_training = module.training
    module.train()
    try:
        for batch in batches:
            forward(batch)
    finally:
        for layer, momentum in momenta.items():
            layer.momentum = momentum
        module.train(was_training)
