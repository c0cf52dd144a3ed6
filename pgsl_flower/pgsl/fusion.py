"""Fusion of activation maps (eqs. 7-8) and decision-level fusion (eqs. 9-11)."""

from __future__ import annotations

import torch
from torch import nn

#: Fixed weights (W_gamma, W_rho, W_beta) for the recovered, fused and attacked streams.
STREAM_WEIGHTS = (0.5, 0.3, 0.2)


class ConvSumFusion(nn.Module):
    """``f_out = (concat(f_u, f_v) * filt + bias) + f_u`` (eq. 8), a 1x1 conv reducing 2C -> C.

    ``f_u`` are the attacked activations, ``f_v`` the recovered ones.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2 * channels, channels, kernel_size=1)

    def forward(self, f_u: torch.Tensor, f_v: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat([f_u, f_v], dim=1)) + f_u


def stream_max_score(scores: torch.Tensor) -> torch.Tensor:
    """``S^max = max_L mean_n S[n, L]``: the largest per-class mean score of a stream."""
    return scores.mean(dim=0).amax()


def adaptive_weights(
    s_r: torch.Tensor,
    s_f: torch.Tensor,
    s_a: torch.Tensor,
    weights: tuple[float, float, float] = STREAM_WEIGHTS,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(gamma, rho)`` of eqs. 10-11 from the streams' (N, classes) scores."""
    w_r, w_f, w_a = weights
    terms = torch.stack(
        [w_r * stream_max_score(s_r), w_f * stream_max_score(s_f), w_a * stream_max_score(s_a)]
    )
    total = terms.sum()
    return terms[0] / total, terms[1] / total


def fuse_decisions(
    s_r: torch.Tensor,
    s_f: torch.Tensor,
    s_a: torch.Tensor,
    weights: tuple[float, float, float] = STREAM_WEIGHTS,
) -> torch.Tensor:
    """``S = gamma*S_r + rho*S_f + (1 - gamma - rho)*S_a`` (eq. 9)."""
    gamma, rho = adaptive_weights(s_r, s_f, s_a, weights)
    return gamma * s_r + rho * s_f + (1 - gamma - rho) * s_a
