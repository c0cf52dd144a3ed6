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
    """Proximal map of ``tau * ||.||_1``: ``sign(x) * max(|x| - tau, 0)``, computed as
    ``x - clamp(x, -tau, tau)``: the same numbers in three passes over ``x`` instead of five
    (a clamp with tensor bounds is slower than a minimum and a maximum)."""
    if not isinstance(tau, torch.Tensor):
        tau = torch.tensor(tau, dtype=x.dtype, device=x.device)
    return x - torch.maximum(torch.minimum(x, tau), -tau)


#: Use the Gram-matrix path when the long side is at least this many times the short one.
GRAM_ASPECT = 4


def singular_value_threshold(x: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
    """Proximal map of ``tau * ||.||_*`` on a batch (B, m, n); ``tau`` of shape (B,).

    For wide or tall matrices (e.g. 16 channels x 784 pixels) the singular values
    come from the float64 eigen-decomposition of the small Gram matrix (:func:`_gram`),
    which is several times faster than an SVD of the full matrix:
    ``SVT(X) = U diag(max(s - tau, 0) / s) U^T X`` with ``X X^T = U diag(s^2) U^T``.
    """
    m, n = x.shape[-2:]
    if max(m, n) < GRAM_ASPECT * min(m, n):
        u, s, vh = torch.linalg.svd(x, full_matrices=False)
        s = torch.clamp_min(s - tau.unsqueeze(-1), 0.0)
        return (u * s.unsqueeze(-2)) @ vh
    wide = m <= n
    gram = _gram(x, wide)
    eigenvalues, u = torch.linalg.eigh(gram)
    s = eigenvalues.clamp_min(0.0).sqrt()
    shrink = torch.where(s > 0, torch.clamp_min(s - tau.double().unsqueeze(-1), 0.0) / s.clamp_min(1e-300), 0.0)
    # The small projector is built in float64; applying it to x in x's dtype costs the
    # rounding of one product in that dtype, no more.
    projector = ((u * shrink.unsqueeze(-2)) @ u.mT).to(x.dtype)
    return projector @ x if wide else x @ projector


def _gram(x: torch.Tensor, wide: bool) -> torch.Tensor:
    """``X X^T`` (wide) or ``X^T X`` (tall), computed in ``x``'s dtype, returned in float64
    for the eigen-decomposition.

    A float32 Gram matrix squares the condition number, so singular values below about
    1e-3 of the largest lose accuracy. On the smashed data PGSL recovers (MNIST, a batch of
    64 samples of 16 x 784) every singular value is at least 7.2, and the recovered
    low-rank part (mu 0.55, 10 iterations) differs from a float64 solve by at most 8e-7
    (relative Frobenius norm, worst sample), against 4e-7 with a float64 Gram of the same
    float32 data; the float64 Gram cost 40 % of the solver's time. Float64 data gets a
    float64 Gram.
    """
    gram = x @ x.mT if wide else x.mT @ x
    return gram.double()


def spectral_norm(x: torch.Tensor) -> torch.Tensor:
    """Largest singular value of each matrix of a batch (B, m, n), in ``x``'s dtype; from the
    small Gram matrix for wide or tall matrices (cf. :func:`singular_value_threshold`)."""
    m, n = x.shape[-2:]
    if max(m, n) < GRAM_ASPECT * min(m, n):
        return torch.linalg.matrix_norm(x, ord=2)
    top = torch.linalg.eigvalsh(_gram(x, m <= n))[..., -1]
    return top.clamp_min(0.0).sqrt().to(x.dtype)


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
    mu_k = torch.clamp_min(0.99 * spectral_norm(d), mu)  # (B,)
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
        # Y = X + beta (X - X_prev), as lerp(X, X_prev, -beta): one pass.
        y_low = torch.lerp(low, low_prev, -beta) if beta else low
        y_sparse = torch.lerp(sparse, sparse_prev, -beta) if beta else sparse
        # Gradient step of length 1/2 on f (eq. 6): Y_L - (Y_L + Y_S - D)/2 = (D + Y_L - Y_S)/2,
        # and Y_S's is D minus that.
        low_in = torch.lerp(d, y_low - y_sparse, 0.5)
        new_low = singular_value_threshold(low_in, mu_k / 2)
        new_sparse = soft_threshold(d - low_in, (lam * mu_k / 2).view(-1, 1, 1))
        at_target = bool((mu_k <= mu).all())
        if at_target or iterations == max_iter:  # the change only matters once mu is reached
            step = torch.linalg.matrix_norm(new_low - low) + torch.linalg.matrix_norm(new_sparse - sparse)
            change = float((step / scale).max())
        low_prev, sparse_prev, low, sparse = low, sparse, new_low, new_sparse
        t_prev, t = t, (1.0 + math.sqrt(1.0 + 4.0 * t * t)) / 2.0
        mu_k = torch.clamp_min(factor * mu_k, mu)
        if at_target and change < tol:
            break
    converged = change < tol
    if single:
        low, sparse = low[0], sparse[0]
    return RPCAResult(low, sparse, iterations, converged, change)
