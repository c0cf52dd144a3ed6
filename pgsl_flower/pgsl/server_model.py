"""The PGSL server side (paper Section IV-C..E): recovery, fusion, three streams.

Per client batch of smashed data ``h`` (N, 64, H/2, W/2):

1. up-sample: ``u = pixel_shuffle(h, 2)`` -> (N, 16, H, W), the inverse of the
   client's down-sampling;
2. proximal recovery (:func:`robust_pca`) on each sample's 16 x (H*W) matrix
   (channels x pixels; DESIGN.md §2 step 5 leaves the matricisation open: this
   one is 12x cheaper than per-channel H x W matrices, see the note in
   :mod:`.proximal`), giving the recovered part ``L``; down-sampled back to the
   split's shape it is ``f_v``. The solver is a fixed preprocessing: no gradient
   flows through it;
3. conv-sum fusion ``f = conv1x1(concat(f_u, f_v)) + f_u`` with ``f_u = h``;
4. three towers (conv3..conv7 + 2 FC, :class:`ServerNet`; conv(k+1)..conv7 at cut-layer k): attacked ``S_a`` on
   ``h``, fused ``S_f`` on ``f``, recovered ``S_r`` on ``f_v``; each is trained on
   its own cross-entropy;
5. only the fused stream's gradient w.r.t. ``h`` goes back to the client: the
   attacked tower sees ``h`` detached, the recovered tower sees ``f_v``.

At evaluation the three streams' softmax scores are combined by adaptive
weighted averaging (eqs. 9-11).

Selected by run-config ``defense = "pgsl"``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from pgsl_flower.config import ConfigError, RunConfig
from pgsl_flower.model import CONV_CHANNELS, ServerNet, decayed_step, make_optimizer
from pgsl_flower.strategy import ServerModel
from pgsl_flower.pgsl.fusion import ConvSumFusion, fuse_decisions
from pgsl_flower.pgsl.lanes import TwoLaneStep
from pgsl_flower.pgsl.proximal import robust_pca

STREAMS = ("recovered", "fused", "attacked")

#: ``0`` runs the towers one after another; unset or ``1``, in two lanes on a CPU with
#: >= 2 torch threads (:mod:`.lanes`).
LANES_ENV = "PGSL_TWO_LANES"


def two_lanes_enabled() -> bool:
    """Whether ``PGSL_TWO_LANES`` allows the lanes (unset: yes); a value other than 0 / 1 is refused."""
    value = os.environ.get(LANES_ENV, "1")
    if value not in ("0", "1"):
        raise ConfigError(f"environment variable {LANES_ENV} must be 0 or 1, got {value!r}")
    return value == "1"


@dataclass(frozen=True)
class ProximalSettings:
    """Parameters of the recovery step (paper: mu = 0.55, Fig. 3)."""

    mu: float = 0.55
    lam: float | None = None
    max_iter: int = 10
    tol: float = 1e-4


def recover(smashed: torch.Tensor, settings: ProximalSettings) -> torch.Tensor:
    """``f_v``: the low-rank part of the up-sampled activations, back at the split's shape."""
    with torch.no_grad():
        up = F.pixel_shuffle(smashed, 2)  # (N, C/4, H, W)
        n, c, height, width = up.shape
        result = robust_pca(
            up.reshape(n, c, height * width),
            mu=settings.mu,
            lam=settings.lam,
            max_iter=settings.max_iter,
            tol=settings.tol,
        )
        return F.pixel_unshuffle(result.low_rank.reshape(n, c, height, width), 2)


class PGSLNet(nn.Module):
    """Fusion module and the three towers."""

    def __init__(self, num_classes: int, tower: str = "paper", bn_momentum: float = 0.1, cut_layer: int = 2) -> None:
        super().__init__()
        self.fusion = ConvSumFusion(CONV_CHANNELS)
        self.towers = nn.ModuleDict(
            {name: ServerNet(num_classes, tower, bn_momentum, cut_layer) for name in STREAMS}
        )

    def forward(self, smashed: torch.Tensor, recovered: torch.Tensor) -> dict[str, torch.Tensor]:
        """Logits per stream. Only the fused stream depends on ``smashed`` with gradient."""
        return {
            "recovered": self.towers["recovered"](recovered),
            "fused": self.towers["fused"](self.fusion(smashed, recovered)),
            "attacked": self.towers["attacked"](smashed.detach()),
        }


def build_pgsl_net(cfg: RunConfig, num_classes: int) -> PGSLNet:
    """The run's PGSL server part ('server-tower', 'bn-momentum', 'cut-layer')."""
    return PGSLNet(num_classes, cfg.server_tower, cfg.bn_momentum, cfg.cut_layer)


class PGSLServerModel(ServerModel):
    """Same interface as :class:`pgsl_flower.strategy.ServerModel`, with PGSL's three streams."""

    def __init__(self, cfg: RunConfig, num_classes: int, device: torch.device, two_lanes: bool | None = None) -> None:
        """``two_lanes=False`` always runs the towers one after another; ``None`` takes
        :func:`two_lanes_enabled` (benchmarks compare the two)."""
        self.device = device
        self.two_lanes = two_lanes_enabled() if two_lanes is None else two_lanes
        self.cfg = cfg
        self.settings = ProximalSettings(cfg.pgsl_mu, cfg.pgsl_lambda or None, cfg.pgsl_max_iter, cfg.pgsl_tol)
        self.model = build_pgsl_net(cfg, num_classes).to(device)
        self.optimizer = make_optimizer(self.model, cfg.lr, cfg.weight_decay)
        self.lanes = TwoLaneStep(self.model.fusion, self.model.towers)
        self.steps_taken = 0
        self.class_weights = None

    def step(self, smashed: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, float, torch.Tensor]:
        """Train all three towers on their own losses; return the fused stream's dL/dh.

        On a CPU with two or more torch threads the towers run in two lanes
        (:class:`.lanes.TwoLaneStep`: same maths, same RNG stream), else one after another.

        Returns (dL_f/dh, fused loss sum, fused predictions), like the plain server step.
        """
        self.model.train()
        h = smashed.to(self.device).detach().requires_grad_(True)  # a fresh leaf: a tensor stepped on twice does not sum its gradients
        y = labels.to(self.device)
        self.optimizer.zero_grad(set_to_none=True)
        if self.two_lanes and self.device.type == "cpu" and torch.get_num_threads() >= 2:
            streams = self.lanes(h, y, lambda x: recover(x, self.settings), self.loss)
            logits = {name: out for name, (out, _) in streams.items()}
            losses = {name: value for name, (_, value) in streams.items()}
        else:
            logits = self.model(h, recover(h.detach(), self.settings))
            losses = {name: self.loss(out, y) for name, out in logits.items()}
            sum(losses.values()).backward()
        decayed_step(self.optimizer, self.cfg.lr, self.cfg.lr_decay, self.steps_taken)
        self.steps_taken += 1
        return h.grad.detach().cpu(), losses["fused"].item() * len(y), logits["fused"].argmax(1).cpu()

    def calibration_forward(self, smashed: torch.Tensor) -> object:
        h = smashed.to(self.device)
        return self.model(h, recover(h, self.settings))

    @torch.no_grad()
    def stream_scores(self, smashed: torch.Tensor) -> dict[str, torch.Tensor]:
        """Softmax scores of the recovered, fused and attacked streams."""
        self.model.eval()
        h = smashed.to(self.device)
        return {name: logits.softmax(1) for name, logits in self.model(h, recover(h, self.settings)).items()}

    @staticmethod
    def decide(scores: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Decision-level fusion (eqs. 9-11) of the three streams' scores."""
        return fuse_decisions(scores["recovered"], scores["fused"], scores["attacked"])
