"""Robust PCA by accelerated proximal gradient with continuation (paper eqs. 2-6).

Solves, for each matrix ``D`` of a batch (B, m, n),

    min_{L, S}  mu * (||L||_* + lambda * ||S||_1) + 1/2 ||D - L - S||_F^2      (eq. 4 with eq. 5)

following Lin, Ganesh, Wright, Wu, Chen & Ma (2009), "Fast convex optimization
algorithms for exact recovery of a corrupted low-rank matrix" (APG, Algorithm 2;
the paper's refs. [30]-[32]). The smooth part f = 1/2||D - L - S||^2 has a
gradient that is 2-Lipschitz in (L, S) (eq. 6), so each step is a gradient step
of length 1/2 on a Nesterov extrapolation Y, followed by the proximal maps:
singular-value thresholding for L and soft-thresholding for S. Continuation
starts at mu_0 = 0.99 ||D||_2 and shrinks mu geometrically down to the target
``mu``. ``L`` is the recovered signal, ``S`` the sparse pixel attack.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class RPCAResult:
    """Recovered low-rank part, sparse part, and how the solver got there."""

    low_rank: torch.Tensor
    sparse: torch.Tensor
    iterations: int
    converged: bool
    relative_change: float


def soft_threshold(x: torch.Tensor, tau: torch.Tensor | float) -> torch.Tensor:
    """Proximal map of ``tau * ||.||_1``: ``sign(x) * max(|x| - tau, 0)``."""
    return torch.sign(x) * torch.clamp_min(x.abs() - tau, 0.0)


#: Use the Gram-matrix path when the long side is at least this many times the short one.
GRAM_ASPECT = 4


def singular_value_threshold(x: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
    """Proximal map of ``tau * ||.||_*`` on a batch (B, m, n); ``tau`` of shape (B,).

    For wide or tall matrices (e.g. 16 channels x 784 pixels) the singular values
    come from the eigen-decomposition of the small Gram matrix (in float64), which
    is several times faster than an SVD of the full matrix:
    ``SVT(X) = U diag(max(s - tau, 0) / s) U^T X`` with ``X X^T = U diag(s^2) U^T``.
    """
    m, n = x.shape[-2:]
    if max(m, n) < GRAM_ASPECT * min(m, n):
        u, s, vh = torch.linalg.svd(x, full_matrices=False)
        s = torch.clamp_min(s - tau.unsqueeze(-1), 0.0)
        return (u * s.unsqueeze(-2)) @ vh
    wide = m <= n
    xd = x.double()
    gram = xd @ xd.mT if wide else xd.mT @ xd
    eigenvalues, u = torch.linalg.eigh(gram)
    s = eigenvalues.clamp_min(0.0).sqrt()
    shrink = torch.where(s > 0, torch.clamp_min(s - tau.double().unsqueeze(-1), 0.0) / s.clamp_min(1e-300), 0.0)
    projector = (u * shrink.unsqueeze(-2)) @ u.mT
    out = projector @ xd if wide else xd @ projector
    return out.to(x.dtype)


def default_lambda(m: int, n: int) -> float:
    """``1 / sqrt(max(m, n))`` (Candes et al. 2011)."""
    return 1.0 / math.sqrt(max(m, n))


def robust_pca(
    data: torch.Tensor,
    mu: float = 0.55,
    lam: float | None = None,
    max_iter: int = 100,
    tol: float = 1e-5,
    eta: float | None = None,
) -> RPCAResult:
    """Split each matrix of ``data`` (B, m, n) or (m, n) into low-rank + sparse.

    ``mu`` is the final relaxation weight, on the scale of ``data``; ``lam``
    weighs sparsity against rank (default ``1/sqrt(max(m, n))``). Stops when the
    relative change of (L, S) falls below ``tol`` after continuation has reached
    ``mu``, or after ``max_iter`` iterations. Runs on ``data``'s device and dtype.

    ``eta`` is the continuation factor; by default it is chosen per matrix so
    that mu reaches its target after half of ``max_iter`` (at most 0.9, Lin et
    al.'s value): with a fixed factor of 0.9 and few iterations, mu would still
    be far above the target at the end and the low-rank part heavily shrunk
    (from mu_0 ~ 110 on MNIST activations, 10 iterations end at mu ~ 38).
    """
    if data.dim() not in (2, 3):
        raise ValueError(f"data: expected (m, n) or (B, m, n), got shape {tuple(data.shape)}")
    if not (mu > 0 and max_iter >= 1 and (eta is None or 0 < eta < 1)):
        raise ValueError(f"need mu > 0, 0 < eta < 1, max_iter >= 1; got {mu}, {eta}, {max_iter}")
    single = data.dim() == 2
    d = data.unsqueeze(0) if single else data
    m, n = d.shape[-2:]
    lam = default_lambda(m, n) if lam is None else lam
    scale = torch.linalg.matrix_norm(d).clamp_min(torch.finfo(d.dtype).tiny)  # (B,)
    mu_k = torch.clamp_min(0.99 * torch.linalg.matrix_norm(d, ord=2), mu)  # (B,)
    if eta is None:
        factor = (mu / mu_k).pow(1.0 / max(max_iter // 2, 1)).clamp(max=0.9)
    else:
        factor = torch.full_like(mu_k, eta)
    low, sparse = torch.zeros_like(d), torch.zeros_like(d)
    low_prev, sparse_prev = low, sparse
    t, t_prev = 1.0, 1.0
    change = math.inf
    iterations = 0
    while iterations < max_iter:
        iterations += 1
        beta = (t_prev - 1.0) / t
        y_low = low + beta * (low - low_prev)
        y_sparse = sparse + beta * (sparse - sparse_prev)
        half_grad = 0.5 * (y_low + y_sparse - d)
        new_low = singular_value_threshold(y_low - half_grad, mu_k / 2)
        new_sparse = soft_threshold(y_sparse - half_grad, (lam * mu_k / 2).view(-1, 1, 1))
        step = torch.linalg.matrix_norm(new_low - low) + torch.linalg.matrix_norm(new_sparse - sparse)
        change = float((step / scale).max())
        low_prev, sparse_prev, low, sparse = low, sparse, new_low, new_sparse
        t_prev, t = t, (1.0 + math.sqrt(1.0 + 4.0 * t * t)) / 2.0
        at_target = bool((mu_k <= mu).all())
        mu_k = torch.clamp_min(factor * mu_k, mu)
        if at_target and change < tol:
            break
    converged = change < tol
    if single:
        low, sparse = low[0], sparse[0]
    return RPCAResult(low, sparse, iterations, converged, change)
