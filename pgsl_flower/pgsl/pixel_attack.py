"""Intentional pixel attack (paper Section IV-A, eq. 1), JSMA-style and non-targeted.

Saliency comes from a client-local surrogate classifier, taken on its logits
``Z`` (with softmax outputs the two JSMA terms are exact negatives of each other,
DESIGN.md §2):

    a_i = dZ_y / dx_i                  b_i = sum_{y' != y} dZ_{y'} / dx_i

``Map`` keeps pixels with a > 0 and b < 0 (they support the true class), the
adversarial ``Map'`` keeps a < 0 and b > 0; both take the value ``-a * b``.
The attacked image raises the top-k pixels of ``Map'`` by ``theta``, clipped
to [0, 1]: raising a pixel with a < 0 and b > 0 lowers the true class's logit
and raises the others'.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def saliency_terms(
    model: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(a, b)`` per pixel, each shaped like ``images``. Samples are independent,
    so gradients of batch sums give per-sample derivatives (model in eval mode)."""
    x = images.detach().clone().requires_grad_(True)
    logits = model(x)
    true = logits.gather(1, labels.view(-1, 1)).sum()
    (a,) = torch.autograd.grad(true, x, retain_graph=True)
    (total,) = torch.autograd.grad(logits.sum(), x)
    return a, total - a


def saliency_map(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``Map`` of eq. 1: ``-a*b`` where a > 0 and b < 0, else 0."""
    return torch.where((a > 0) & (b < 0), -a * b, torch.zeros_like(a))


def adversarial_map(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``Map'`` (inverted conditions): ``-a*b`` where a < 0 and b > 0, else 0."""
    return torch.where((a < 0) & (b > 0), -a * b, torch.zeros_like(a))


def few_pixel_attack(
    images: torch.Tensor, adv_map: torch.Tensor, k: int, theta: float
) -> torch.Tensor:
    """Raise the ``k`` most salient pixels of ``Map'`` per image by ``theta``, clipped to [0, 1].

    Pixels with zero ``Map'`` are never changed, so at most ``k`` pixels change.
    """
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    flat = adv_map.flatten(1)
    k = min(k, flat.shape[1])
    mask = torch.zeros_like(flat)
    if k:
        values, index = flat.topk(k, dim=1)
        mask.scatter_(1, index, (values > 0).to(mask.dtype))
    return (images + theta * mask.view_as(images)).clamp(0.0, 1.0)


def attack(
    model: Callable[[torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    labels: torch.Tensor | None,
    k: int,
    theta: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Attacked images and the (clean-image) saliency ``Map`` summed over colour channels,
    (N, 1, H, W): the extra channel the client sends.

    ``labels=None`` takes the class ``y`` of eq. 1 from the surrogate's own
    prediction. The client uses that: with the true label, ``Map`` encodes the
    label itself, and since ``Map`` is an input channel the network reads the
    answer from it (measured: 100.00% MNIST test accuracy for every stream).
    """
    if labels is None:
        with torch.no_grad():
            labels = model(images).argmax(1)
    a, b = saliency_terms(model, images, labels)
    attacked = few_pixel_attack(images, adversarial_map(a, b), k, theta)
    return attacked, saliency_map(a, b).sum(dim=1, keepdim=True)
