"""Gradient matching: DLG (Zhu et al. 2019) and iDLG (Zhao et al. 2020).

Observation: the parameter gradients ``g = dL(x, y)/dθ`` of one training
example, as a participant uploads them for aggregation (what each run
observes is stated where it is called). The attacker knows the model and
optimises a dummy input ``x'`` (and, for DLG, a dummy soft label) to minimise
``sum ||dL(x', y')/dθ - g||^2`` with L-BFGS, as in both papers.

iDLG first reads the label off the last linear layer: with cross-entropy and
non-negative inputs to that layer (ReLU/sigmoid features), the true class's
weight-gradient row is the only one with a negative sum.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch.nn import functional as F

from pgsl_flower.attacks.interface import GradientObservation

#: ``loss_fn(x, target)``: the training loss of inputs ``x`` for a target given as
#: class indices or as class probabilities (what ``F.cross_entropy`` accepts).
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def idlg_label(last_weight_grad: torch.Tensor) -> int:
    """The class whose row of the last linear layer's weight gradient sums negative (iDLG)."""
    if last_weight_grad.dim() != 2:
        raise ValueError(f"expected a (classes, features) weight gradient, got {tuple(last_weight_grad.shape)}")
    return int(last_weight_grad.sum(1).argmin())


def parameter_gradients(loss_fn: LossFn, params: Sequence[torch.Tensor], x: torch.Tensor, target: torch.Tensor) -> list[torch.Tensor]:
    """``dL(x, target)/dθ`` for the given parameters (the observation, detached)."""
    return [g.detach() for g in torch.autograd.grad(loss_fn(x, target), list(params))]


@dataclass(frozen=True)
class GradientMatchResult:
    """Reconstructed input, the label used or inferred, and the final matching loss."""

    inputs: torch.Tensor
    label: int
    matching_loss: float


def match_gradients(
    loss_fn: LossFn,
    params: Sequence[torch.Tensor],
    observed: Sequence[torch.Tensor],
    input_shape: Sequence[int],
    num_classes: int,
    *,
    label: int | None = None,
    iterations: int = 300,
    seed: int = 0,
    clamp: tuple[float, float] | None = None,
) -> GradientMatchResult:
    """DLG when ``label`` is None (the label is optimised too), else iDLG's second stage.

    ``iterations`` counts L-BFGS function evaluations. ``clamp`` keeps the
    dummy within a valid input range between steps.
    """
    generator = torch.Generator().manual_seed(seed)
    dummy = torch.rand((1, *input_shape), generator=generator).requires_grad_(True)
    variables = [dummy]
    dummy_label = None
    if label is None:
        dummy_label = torch.randn((1, num_classes), generator=generator).requires_grad_(True)
        variables.append(dummy_label)
    optimizer = torch.optim.LBFGS(variables, lr=1.0, max_iter=iterations, history_size=100, line_search_fn="strong_wolfe")
    params = list(params)

    def target() -> torch.Tensor:
        if dummy_label is None:
            return torch.tensor([label])
        return dummy_label.softmax(1)

    def mismatch(create_graph: bool) -> torch.Tensor:
        grads = torch.autograd.grad(loss_fn(dummy, target()), params, create_graph=create_graph)
        return sum(((g - o) ** 2).sum() for g, o in zip(grads, observed, strict=True))

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = mismatch(create_graph=True)
        loss.backward()
        return loss

    optimizer.step(closure)
    if clamp is not None:
        with torch.no_grad():
            dummy.clamp_(*clamp)
    final = float(mismatch(create_graph=False))
    inferred = label if dummy_label is None else int(dummy_label.argmax())
    return GradientMatchResult(dummy.detach(), inferred, final)


@dataclass(frozen=True)
class GradientMatching:
    """DLG (``name="dlg"``: input and soft label optimised jointly) or iDLG (``"idlg"``:
    label from the last layer's gradient signs, then the input alone)."""

    name: str = "idlg"
    iterations: int = 300
    seed: int = 0
    clamp: tuple[float, float] | None = (0.0, 1.0)

    def __post_init__(self) -> None:
        if self.name not in ("dlg", "idlg"):
            raise ValueError(f"unknown gradient-matching attack {self.name!r}; known: dlg, idlg")

    def run(self, observation: GradientObservation) -> GradientMatchResult:
        """The reconstructed input (as the model takes it) and the label used or found."""
        label = idlg_label(observation.gradients[observation.last_weight_index]) if self.name == "idlg" else None
        return match_gradients(
            observation.loss_fn, observation.params, observation.gradients, observation.input_shape,
            observation.num_classes, label=label, iterations=self.iterations, seed=self.seed, clamp=self.clamp,
        )

    def reconstruct(self, observation: GradientObservation) -> torch.Tensor:
        return observation.to_images(self.run(observation).inputs).clamp(0, 1)


def observe_gradients(
    loss_fn: LossFn, params: Sequence[torch.Tensor], inputs: torch.Tensor, label: int, num_classes: int,
    last_weight_index: int, to_images: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> GradientObservation:
    """What the victim uploads for one example ``inputs`` (1, ...) of class ``label``."""
    gradients = parameter_gradients(loss_fn, params, inputs, torch.tensor([label]))
    extra = {} if to_images is None else {"to_images": to_images}
    return GradientObservation(loss_fn, list(params), gradients, tuple(inputs.shape[1:]), num_classes,
                               last_weight_index, **extra)


def cross_entropy_loss(model: torch.nn.Module) -> LossFn:
    """``loss_fn`` for a plain classifier."""
    return lambda x, target: F.cross_entropy(model(x), target)
