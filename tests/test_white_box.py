"""White-box inversion (He et al. 2019, rMLE) of smashed data through a known client part."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from pgsl_flower.attacks.interception import WHITE_BOX_STEP_FACTOR, smashed_data_attack
from pgsl_flower.attacks.interface import AdversaryKnowledge, SmashedDataObservation
from pgsl_flower.attacks.scoring import reconstruction_metrics
from pgsl_flower.attacks.white_box import WhiteBoxInversion
from pgsl_flower.config import ConfigError, RunConfig, parse_run_config
from pgsl_flower.model import prepare_input

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def clean_reconstruction(inversion_setup):
    _, _, knowledge, smashed = inversion_setup
    return WhiteBoxInversion(steps=300, lr=0.1, tv_weight=1e-3, seed=0).reconstruct(SmashedDataObservation(knowledge, smashed))


def _psnr(reconstructed: torch.Tensor, images: torch.Tensor) -> float:
    return reconstruction_metrics(reconstructed, images)["psnr"]


def test_white_box_inverts_a_known_client_part(inversion_setup, clean_reconstruction):
    images, client, knowledge, smashed = inversion_setup
    weights = {k: v.clone() for k, v in client.state_dict().items()}
    reconstructed = clean_reconstruction
    assert reconstructed.shape == images.shape
    assert 0 <= float(reconstructed.min()) and float(reconstructed.max()) <= 1
    psnr = _psnr(reconstructed, images)
    print(f"white-box PSNR {psnr:.2f} dB")
    # measured 33.0 dB (CPU, torch seed 0); a zero image scores 10.8 dB
    assert psnr >= 25.0
    assert psnr > _psnr(torch.zeros_like(images), images) + 10
    # the caller's client part is untouched (weights, BatchNorm statistics, mode, gradients)
    assert all(torch.equal(v, weights[k]) for k, v in client.state_dict().items())
    assert not client.training and all(p.requires_grad for p in client.parameters())
    # deterministic given the seed
    short = WhiteBoxInversion(steps=20, seed=3)
    observation = SmashedDataObservation(knowledge, smashed[:2])
    assert torch.equal(short.reconstruct(observation), short.reconstruct(observation))


def test_large_laplace_noise_on_the_smashed_data_defeats_it(inversion_setup, clean_reconstruction):
    images, _, knowledge, smashed = inversion_setup
    generator = torch.Generator().manual_seed(1)
    scale = 5 * float(smashed.std()) / 2**0.5  # Laplace std = sqrt(2) * scale: 5x h's std
    exponential = torch.empty_like(smashed).exponential_(generator=generator)
    sign = torch.randint(0, 2, smashed.shape, generator=generator) * 2 - 1
    noisy = smashed + scale * sign * exponential
    attack = WhiteBoxInversion(steps=300, lr=0.1, tv_weight=1e-3, seed=0)
    clean = _psnr(clean_reconstruction, images)
    defended = _psnr(attack.reconstruct(SmashedDataObservation(knowledge, noisy)), images)
    print(f"white-box PSNR {clean:.2f} dB clean, {defended:.2f} dB under Laplace noise")
    # measured 33.0 dB clean vs 9-10 dB under the noise
    assert defended < clean - 15


def test_white_box_with_an_unknown_saliency_map_and_train_mode(inversion_setup):
    images, client, knowledge, _ = inversion_setup
    generator = torch.Generator().manual_seed(2)
    saliency = torch.rand(len(images), 1, 14, 14, generator=generator)  # the victim's map: unknown
    pgsl_knowledge = AdversaryKnowledge(
        knowledge.own_images, knowledge.own_inputs, client, map_channel_is_zero=False, seed=0
    )
    for mode in ("eval", "train"):
        trained = client.train(mode == "train")
        with torch.no_grad():
            smashed = trained(prepare_input(images, saliency))
        client.eval()
        attack = WhiteBoxInversion(steps=150, seed=0, client_mode=mode)
        reconstructed = attack.reconstruct(SmashedDataObservation(pgsl_knowledge, smashed))
        assert reconstructed.shape == images.shape
        assert 0 <= float(reconstructed.min()) and float(reconstructed.max()) <= 1
        psnr = _psnr(reconstructed, images)
        print(f"white-box PSNR {psnr:.2f} dB, unknown map, {mode} mode")  # measured 29.3 (eval), 21.4 (train)
        assert psnr > _psnr(torch.zeros_like(images), images) + 5
    with pytest.raises(ValueError, match="client_mode"):
        WhiteBoxInversion(client_mode="test")


def test_white_box_is_a_configurable_smashed_data_attack():
    cfg = parse_run_config({"adversary-attacks": "decoder,white-box", "attack-steps": 40, "batch-size": 16})
    assert cfg.attack_names == ("decoder", "white-box")
    attack = smashed_data_attack("white-box", cfg)
    assert isinstance(attack, WhiteBoxInversion) and attack.name == "white-box"
    assert attack.steps == WHITE_BOX_STEP_FACTOR * 40 and attack.client_mode == "train" and attack.batch_size == 16
    assert RunConfig().attack_names == ("decoder", "gan")  # not in the default set
    with pytest.raises(ConfigError, match="adversary-attacks"):
        parse_run_config({"adversary-attacks": "whitebox"})


def test_noise_aware_white_box_beats_the_l2_one_under_laplace_noise(inversion_setup):
    """'white-box-l1' (L1 data term, the Laplace likelihood, stronger TV prior) against the plain
    rMLE attack on h with Laplace noise of twice h's std; same steps, same start."""
    images, _, knowledge, smashed = inversion_setup
    generator = torch.Generator().manual_seed(1)
    scale = 2 * float(smashed.std()) / 2**0.5
    exponential = torch.empty_like(smashed).exponential_(generator=generator)
    sign = torch.randint(0, 2, smashed.shape, generator=generator) * 2 - 1
    observation = SmashedDataObservation(knowledge, smashed + scale * sign * exponential)
    cfg = RunConfig(attack_steps=60, seed=0)  # 300 pixel-space steps each
    # the fixture's h comes from the client part in eval mode: the attacks run it so too
    l2, l1 = (replace(smashed_data_attack(name, cfg), client_mode="eval") for name in ("white-box", "white-box-l1"))
    assert (l1.name, l1.norm, l2.norm) == ("white-box-l1", "l1", "l2") and l1.tv_weight > l2.tv_weight
    plain, aware = (_psnr(attack.reconstruct(observation), images) for attack in (l2, l1))
    print(f"Laplace noise 2 x std(h): white-box {plain:.2f} dB, white-box-l1 {aware:.2f} dB")
    # measured 18.9 vs 23.1 dB
    assert aware > plain + 2
    with pytest.raises(ValueError, match="norm"):
        WhiteBoxInversion(norm="l3")
