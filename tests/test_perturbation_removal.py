"""Defense-aware white-box inversion: the server learns, on its auxiliary pool, to undo PGSL's pixel attack
(white-box-denoised) and the inversion's errors under any defense (white-box-refined)."""

from __future__ import annotations

import pytest
import torch

from pgsl_flower.attacks.interception import (
    SERVER_ADVERSARY,
    adversary_knowledge,
    reconstruct_intercepted,
    smashed_data_attack,
)
from pgsl_flower.attacks.interface import SmashedDataObservation, images_from_inputs, smashed_in_batches
from pgsl_flower.attacks.perturbation_removal import InversionRefinement, PerturbationRemoval
from pgsl_flower.attacks.scoring import reconstruction_metrics
from pgsl_flower.config import ConfigError, RunConfig, parse_run_config
from pgsl_flower.defenses import batch_seed, make_defense
from pgsl_flower.local_data import aux_data, local_data
from pgsl_flower.model import build_client_net

pytestmark = pytest.mark.usefixtures("one_thread")

PGSL = RunConfig(defense="pgsl", attack_pixels=20, attack_theta=0.5, adversary_aux_samples=300,
                 samples_per_client=200, seed=1)


def _victim(cfg: RunConfig, count: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """A client's clean training images and the images its PGSL pipeline fed its client part."""
    data = local_data(cfg, 0, 2)
    index = torch.arange(count)
    return data.images(index), images_from_inputs(data.inputs(index)).clamp(0, 1)


def _knowledge(cfg: RunConfig):
    client = build_client_net(cfg, 1)
    return adversary_knowledge(cfg, aux_data(cfg, SERVER_ADVERSARY), client, SERVER_ADVERSARY, (1, 28, 28))


def _assert_closer(before_images: torch.Tensor, after_images: torch.Tensor, clean: torch.Tensor,
                   min_psnr_gain: float, min_ssim_gain: float) -> None:
    """``after_images`` (in [0, 1], clean's shape) score at least these gains over ``before_images``."""
    before, after = reconstruction_metrics(before_images, clean), reconstruction_metrics(after_images, clean)
    print(f"PSNR {before['psnr']:.2f} -> {after['psnr']:.2f} dB, SSIM {before['ssim']:.3f} -> {after['ssim']:.3f}")
    assert after["psnr"] >= before["psnr"] + min_psnr_gain
    assert after["ssim"] > before["ssim"] + min_ssim_gain
    assert after_images.shape == clean.shape
    assert 0 <= float(after_images.min()) and float(after_images.max()) <= 1


def test_the_learnt_inverse_undoes_the_pixel_attack_on_images_it_never_saw():
    """Trained on the pool's (attacked, clean) pairs only, it restores a victim's attacked images
    (what an exact white-box inversion recovers) far closer to the clean ones."""
    clean, attacked = _victim(PGSL)
    assert not torch.equal(clean, attacked)  # the pixel attack changed them
    restored = PerturbationRemoval(steps=300).apply(_knowledge(PGSL), attacked)
    _assert_closer(attacked, restored, clean, min_psnr_gain=3.0, min_ssim_gain=0.05)


def test_without_an_input_perturbation_there_is_nothing_to_undo():
    plain = PGSL.replace(defense="none")
    clean, attacked = _victim(plain, 8)
    assert torch.equal(clean, attacked)
    assert PerturbationRemoval(steps=5).apply(_knowledge(plain), clean) is clean


def test_the_server_runs_it_after_its_own_inversion():
    """reconstruct_intercepted: 'white-box-denoised' takes 'white-box-l1''s reconstruction and
    changes it under PGSL; with no defense it is that reconstruction."""
    for defense in ("pgsl", "none"):
        cfg = PGSL.replace(defense=defense, adversary=0, adversary_role="server", attack_steps=4,
                           adversary_attacks="white-box-l1,white-box-denoised", batch_size=8)
        client = build_client_net(cfg, 1)
        data = local_data(cfg, 0, 2)
        smashed = smashed_in_batches(client, data.inputs(torch.arange(8)), 8).detach()
        out = reconstruct_intercepted(cfg, None, client, smashed, SERVER_ADVERSARY, (1, 28, 28))
        assert set(out) == {"white-box-l1", "white-box-denoised"}
        same = torch.equal(out["white-box-l1"], out["white-box-denoised"])
        assert same == (defense == "none"), defense


def test_the_server_needs_its_auxiliary_pool_for_it():
    with pytest.raises(ConfigError, match=r"attacks \['white-box-denoised'\] needs 'adversary-aux-samples'"):
        parse_run_config({"adversary": 0, "adversary-role": "server", "adversary-attacks": "white-box-denoised"})


def test_the_refiner_learnt_through_the_inversion_sees_through_laplace_noise():
    """'white-box-refined': the server pushes its pool images through the client part, fresh Laplace
    noise of the configured scale and the same L1 inversion, and learns inverted -> clean; applied to a
    victim's inversion it recovers far more than the inversion alone."""
    cfg = RunConfig(defense="laplace", laplace_scale=1.0, adversary_aux_samples=300, samples_per_client=200,
                    seed=1, adversary=0, adversary_role="server", attack_steps=20, batch_size=32,
                    adversary_images=64)
    torch.manual_seed(0)
    client = build_client_net(cfg, 1)
    data = local_data(cfg, 0, 2)
    index = torch.arange(64)
    sent = make_defense(cfg).release(smashed_in_batches(client, data.inputs(index), 32), batch_seed(cfg, 0, 0))
    knowledge = adversary_knowledge(cfg, aux_data(cfg, SERVER_ADVERSARY), client, SERVER_ADVERSARY, (1, 28, 28))
    observation = SmashedDataObservation(knowledge, sent)
    inverted = smashed_data_attack("white-box-l1", cfg).reconstruct(observation).clamp(0, 1)
    refined = smashed_data_attack("white-box-refined", cfg).reconstruct_from(observation, inverted)
    _assert_closer(inverted, refined, data.images(index), min_psnr_gain=5.0, min_ssim_gain=0.1)


def test_the_refiner_needs_images_and_the_server_runs_it_on_its_inversion():
    cfg = PGSL.replace(defense="laplace", adversary=0, adversary_role="server", attack_steps=2, batch_size=8,
                       adversary_images=8, adversary_attacks="white-box-l1,white-box-refined")
    client = build_client_net(cfg, 1)
    smashed = smashed_in_batches(client, local_data(cfg, 0, 2).inputs(torch.arange(8)), 8).detach()
    out = reconstruct_intercepted(cfg, None, client, smashed, SERVER_ADVERSARY, (1, 28, 28))
    assert set(out) == {"white-box-l1", "white-box-refined"}
    assert not torch.equal(out["white-box-l1"], out["white-box-refined"])
    nothing = adversary_knowledge(cfg, None, client, SERVER_ADVERSARY, (1, 28, 28))
    assert InversionRefinement(smashed_data_attack("white-box-l1", cfg)).fit(nothing) is None
    with pytest.raises(ConfigError, match=r"attacks \['white-box-refined'\] needs 'adversary-aux-samples'"):
        parse_run_config({"adversary": 0, "adversary-role": "server", "adversary-attacks": "white-box-refined"})
