"""Adversarial-example attacks for the Table II rows, through ART.

JSMA (Papernot et al. 2016), C&W L2 (Carlini & Wagner 2017), BIM (Kurakin et
al. 2017) and FGSM (Goodfellow et al. 2015), from the Adversarial Robustness
Toolbox, against a differentiable image classifier (images in [0, 1] ->
logits). Parameters are ART's usual ones for MNIST-scale images; each is
listed in :data:`ATTACKS` so a table can quote them.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

ATTACKS: dict[str, dict[str, float | int]] = {
    "jsma": {"theta": 1.0, "gamma": 0.1},
    "cw": {"confidence": 0.0, "initial_const": 1.0, "max_iter": 10, "binary_search_steps": 2, "learning_rate": 0.1},
    "bim": {"eps": 0.2, "eps_step": 0.02, "max_iter": 20},
    "fgsm": {"eps": 0.2},
}


class ImageClassifier(nn.Module):
    """Wraps ``prepare`` (image -> model input) and a model, so ART sees images."""

    def __init__(self, prepare: Callable[[torch.Tensor], torch.Tensor], model: nn.Module) -> None:
        super().__init__()
        self.prepare = prepare
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(self.prepare(images))


def adversarial_examples(
    classifier: nn.Module, images: torch.Tensor, num_classes: int, attack: str, batch_size: int = 64
) -> torch.Tensor:
    """Untargeted adversarial versions of float images (N, C, H, W) in [0, 1]."""
    from art.attacks.evasion import BasicIterativeMethod, CarliniL2Method, FastGradientMethod, SaliencyMapMethod
    from art.estimators.classification import PyTorchClassifier

    if attack not in ATTACKS:
        raise ValueError(f"unknown adversarial attack {attack!r}; known: {sorted(ATTACKS)}")
    classifier.eval()
    estimator = PyTorchClassifier(
        model=classifier,
        loss=nn.CrossEntropyLoss(),
        input_shape=tuple(images.shape[1:]),
        nb_classes=num_classes,
        clip_values=(0.0, 1.0),
        device_type="cpu",
    )
    params = ATTACKS[attack]
    kinds = {
        "jsma": SaliencyMapMethod,
        "cw": CarliniL2Method,
        "bim": BasicIterativeMethod,
        "fgsm": FastGradientMethod,
    }
    extra = {} if attack == "fgsm" else {"verbose": False}
    method = kinds[attack](estimator, batch_size=batch_size, **extra, **params)
    adversarial = method.generate(x=images.numpy().astype(np.float32))
    return torch.from_numpy(adversarial).float().clamp(0, 1)
