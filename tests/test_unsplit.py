"""UnSplit (Erdoğan et al. 2022): joint optimisation of the input and a clone of the client part,
for an adversary that knows the client part's architecture but not its weights."""

from __future__ import annotations

import pytest
import torch

from pgsl_flower.attacks.interception import WHITE_BOX_STEP_FACTOR, smashed_data_attack
from pgsl_flower.attacks.interface import SmashedDataObservation
from pgsl_flower.attacks.scoring import reconstruction_metrics
from pgsl_flower.attacks.unsplit import CLONE_SEED_OFFSET, UnSplit, fresh_clone
from pgsl_flower.config import parse_run_config

pytestmark = pytest.mark.usefixtures("one_thread")


def test_the_clone_keeps_nothing_of_the_victims_weights(inversion_setup):
    _, client, _, _ = inversion_setup
    weights = {k: v.clone() for k, v in client.state_dict().items()}
    clone = fresh_clone(client, 0 + CLONE_SEED_OFFSET)
    assert type(clone) is type(client)
    for (name, theirs), ours in zip(client.named_parameters(), clone.parameters(), strict=True):
        assert theirs.shape == ours.shape
        if name.endswith("0.weight") or name.endswith("3.weight"):  # the conv kernels: redrawn
            assert not torch.allclose(theirs, ours), name
    assert all(torch.equal(v, weights[k]) for k, v in client.state_dict().items())  # the victim is untouched
    assert torch.equal(next(fresh_clone(client, 5).parameters()), next(fresh_clone(client, 5).parameters()))


def test_unsplit_reduces_its_matching_loss_and_beats_a_blank_guess(inversion_setup):
    images, _, knowledge, smashed = inversion_setup
    reconstructed, losses = UnSplit(iterations=30, seed=0).reconstruct_with_losses(SmashedDataObservation(knowledge, smashed))
    assert reconstructed.shape == images.shape and 0 <= float(reconstructed.min()) <= float(reconstructed.max()) <= 1
    (history,) = losses  # one batch of 8
    print(f"UnSplit matching loss {history[0]:.3e} -> {history[-1]:.3e}")
    assert history[-1] < 0.5 * history[0]
    psnr = reconstruction_metrics(reconstructed, images)["psnr"]
    blank = reconstruction_metrics(torch.zeros_like(images), images)["psnr"]
    print(f"UnSplit PSNR {psnr:.2f} dB; a zero image {blank:.2f} dB")
    assert psnr > blank
    # without optimisation (learning rates ~0) the loss does not fall: the assertion above can fail
    frozen = UnSplit(iterations=5, lr=1e-9, model_lr=1e-9, seed=0).reconstruct_with_losses(
        SmashedDataObservation(knowledge, smashed))[1][0]
    assert frozen[-1] > 0.9 * frozen[0]


def test_unsplit_is_a_configurable_smashed_data_attack():
    cfg = parse_run_config({"adversary-attacks": "white-box,unsplit", "attack-steps": 40, "batch-size": 16, "seed": 3})
    assert cfg.attack_names == ("white-box", "unsplit")
    attack = smashed_data_attack("unsplit", cfg)
    assert isinstance(attack, UnSplit) and attack.name == "unsplit" and attack.seed == 3
    assert attack.client_mode == "train" and attack.batch_size == 16
    assert attack.iterations * (attack.input_steps + attack.model_steps) <= WHITE_BOX_STEP_FACTOR * 40
    with pytest.raises(ValueError, match="iterations"):
        UnSplit(iterations=0)
