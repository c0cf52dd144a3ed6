"""Reconstruction attacks, their metrics, ART attacks, and the adversarial client in a federation."""

from __future__ import annotations

import hashlib
import json
import math

import numpy as np
import pytest
import torch
from flwr.app import Context, Message
from torch import nn

from pgsl_flower import protocol
from pgsl_flower.attacks.adversarial_examples import ImageClassifier, adversarial_examples
from pgsl_flower.attacks.gan_prior import GANPriorInversion
from pgsl_flower.attacks.gradient_matching import (
    GradientMatching,
    cross_entropy_loss,
    idlg_label,
    observe_gradients,
)
from pgsl_flower.attacks.interception import SERVER_ADVERSARY
from pgsl_flower.attacks.interface import AdversaryKnowledge, SmashedDataObservation, smashed_in_batches
from pgsl_flower.attacks.scoring import reconstruction_metrics
from pgsl_flower.client_app import build_client_app
from pgsl_flower.config import ConfigError, RunConfig, parse_run_config
from pgsl_flower.data import load_dataset
from pgsl_flower.local_data import AUX_POOL_FRACTION, aux_data, aux_indices, aux_pool, client_partitions, local_data
from pgsl_flower.model import ClientNet, SplitNet, make_optimizer, prepare_input
from pgsl_flower.simulation import simulate


@pytest.fixture(scope="module")
def mnist():
    return load_dataset("mnist", None)


# -- metrics ------------------------------------------------------------------------------
def test_metrics_known_values():
    torch.manual_seed(0)
    x = torch.rand(4, 1, 28, 28) * 0.8
    same = reconstruction_metrics(x, x.clone())
    assert same["mse"] == 0.0 and same["ssim"] == pytest.approx(1.0, abs=1e-6)
    shifted = reconstruction_metrics(x + 0.1, x)  # every pixel off by 0.1: MSE 0.01, PSNR 20 dB
    assert shifted["mse"] == pytest.approx(0.01, rel=1e-4)
    assert shifted["psnr"] == pytest.approx(20.0, abs=1e-3)
    half = reconstruction_metrics(torch.full((2, 1, 8, 8), 0.5), torch.zeros(2, 1, 8, 8))
    assert half["mse"] == pytest.approx(0.25) and half["psnr"] == pytest.approx(10 * math.log10(4), abs=1e-4)
    noisy = reconstruction_metrics((x + 0.3 * torch.randn_like(x)).clamp(0, 1), x)
    assert noisy["ssim"] < shifted["ssim"] <= 1.0
    with pytest.raises(ValueError, match="must both be"):
        reconstruction_metrics(x[:2], x)


# -- gradient matching ----------------------------------------------------------------------
class _LeNet(nn.Module):
    """The small sigmoid CNN of the DLG/iDLG papers."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 12, 5, padding=2, stride=2), nn.Sigmoid(),
            nn.Conv2d(12, 12, 5, padding=2, stride=2), nn.Sigmoid(),
            nn.Conv2d(12, 12, 5, padding=2), nn.Sigmoid(),
        )
        self.fc = nn.Linear(12 * 7 * 7, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.body(x).flatten(1))


def _lenet_observation(test, index: int, seed: int):
    """A randomly initialised LeNet's gradient on test image ``index``: (observation, x, y)."""
    torch.manual_seed(seed)
    model = _LeNet()
    for p in model.parameters():
        nn.init.uniform_(p, -0.5, 0.5)
    params = list(model.parameters())
    x, y = test.images[index : index + 1].float() / 255, int(test.labels[index])
    observation = observe_gradients(cross_entropy_loss(model), params, x, y, 10, last_weight_index=len(params) - 2)
    return observation, x, y


def test_idlg_recovers_a_single_image_and_its_label(mnist):
    for index in (0, 1):
        observation, x, y = _lenet_observation(mnist[1], index, seed=1)
        attack = GradientMatching("idlg", iterations=300)
        assert attack.run(observation).label == y  # from the last layer's gradient signs alone
        assert float(((attack.reconstruct(observation) - x) ** 2).mean()) < 1e-3
    # a random guess is nowhere near
    assert float(((torch.rand_like(x) - x) ** 2).mean()) > 0.1


def test_dlg_optimises_the_label_too(mnist):
    observation, x, y = _lenet_observation(mnist[1], 2, seed=2)
    result = GradientMatching("dlg", iterations=300).run(observation)
    assert result.label == y
    assert float(((result.inputs.clamp(0, 1) - x) ** 2).mean()) < 1e-2
    with pytest.raises(ValueError, match="unknown gradient-matching attack"):
        GradientMatching("gradinversion")


def test_inverting_gradients_uses_idlg_label_and_recovers(mnist):
    observation, x, y = _lenet_observation(mnist[1], 3, seed=3)
    result = GradientMatching("ig", iterations=300).run(observation)
    assert result.label == y
    assert 0.0 <= float(result.inputs.min()) and float(result.inputs.max()) <= 1.0  # projected into the box
    assert float(((result.inputs - x) ** 2).mean()) < 1e-2


def test_idlg_label_rule():
    grad = torch.tensor([[0.2, 0.1], [-0.5, -0.4], [0.3, 0.0]])
    assert idlg_label(grad) == 1
    with pytest.raises(ValueError, match="weight gradient"):
        idlg_label(torch.zeros(3))


# -- GAN prior ----------------------------------------------------------------------------
def test_gan_inversion_matches_the_intercepted_smashed_data(mnist):
    train, _ = mnist
    images = train.images[:256].float() / 255
    client = ClientNet(1)
    knowledge = AdversaryKnowledge(images, prepare_input(images), client, map_channel_is_zero=True, seed=0)
    target = smashed_in_batches(client, prepare_input(train.images[1000:1016].float() / 255), 16)
    observation = SmashedDataObservation(knowledge, target)
    short = GANPriorInversion(train_steps=30, steps=1).reconstruct(observation)
    long = GANPriorInversion(train_steps=30, steps=60).reconstruct(observation)

    def mismatch(images: torch.Tensor) -> float:
        return float(((smashed_in_batches(client, prepare_input(images), 16) - target) ** 2).mean())

    assert long.shape == (16, 1, 28, 28) and 0 <= float(long.min()) and float(long.max()) <= 1
    assert mismatch(long) < 0.8 * mismatch(short)


# -- adversarial examples (ART) -----------------------------------------------------------------
def test_art_attacks_fool_a_trained_classifier(mnist):
    train, test = mnist
    torch.manual_seed(0)
    model = SplitNet(1, 10)
    optimizer = make_optimizer(model)
    images, labels = train.images[:3000].float() / 255, train.labels[:3000]
    model.train()
    for start in range(0, 3000, 64):
        loss = nn.functional.cross_entropy(model(prepare_input(images[start : start + 64])), labels[start : start + 64])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    classifier = ImageClassifier(prepare_input, model).eval()
    x, y = test.images[:32].float() / 255, test.labels[:32]

    def accuracy(batch: torch.Tensor) -> float:
        with torch.no_grad():
            return float((classifier(batch).argmax(1) == y).float().mean())

    clean = accuracy(x)
    assert clean > 0.8
    fgsm = adversarial_examples(classifier, x, 10, "fgsm")
    assert float((fgsm - x).abs().max()) <= 0.2 + 1e-6
    assert accuracy(fgsm) < clean - 0.3
    jsma = adversarial_examples(classifier, x, 10, "jsma")
    changed = (jsma != x).flatten(1).sum(1).float().mean()
    assert accuracy(jsma) < clean - 0.3 and changed < 0.2 * 784  # few pixels, large changes
    with pytest.raises(ValueError, match="unknown adversarial attack"):
        adversarial_examples(classifier, x, 10, "deepfool")


# -- config ---------------------------------------------------------------------------------
def test_adversary_config_is_validated():
    assert RunConfig().attack_names == ("decoder", "gan")
    with pytest.raises(ConfigError, match="adversary-attacks"):
        parse_run_config({"adversary-attacks": "decoder,dlg"})
    with pytest.raises(ConfigError, match="adversary-attacks"):
        parse_run_config({"adversary-attacks": " , "})
    with pytest.raises(ConfigError, match="'adversary' needs schedule 'splitfed'"):
        parse_run_config({"adversary": 0, "schedule": "sequential"})
    with pytest.raises(ConfigError, match="'adversary' = 3 must be a partition id below num-clients"):
        simulate({"adversary": 3, "samples-per-client": 100}, 3)


# -- the adversarial client in a real federation ------------------------------------------------
def _save_arrays(path, message: Message) -> None:  # noqa: ANN001
    arrays = {
        f"{record_name}__{key}": array.numpy()
        for record_name, record in message.content.array_records.items()
        for key, array in record.items()
    }
    np.savez(path, **arrays)


def _recording_mod(folder, partitions=(0,)):  # noqa: ANN001
    """Saves every array the clients of ``partitions`` (default: the adversarial client, 0) receive,
    and every array any client sends back (``reply-*``)."""

    def mod(message: Message, context: Context, call_next):  # noqa: ANN001
        name = f"{message.metadata.message_type}-{message.metadata.message_id}.npz"
        if int(context.node_config["partition-id"]) in partitions:
            _save_arrays(folder / name, message)
        reply = call_next(message, context)
        if not reply.has_error():
            _save_arrays(folder / f"reply-{name}", reply)
        return reply

    return mod


def _assert_no_raw_images(files, cfg: RunConfig, num_clients: int) -> None:  # noqa: ANN001
    """No recorded array holds a client's raw training image (uint8 or [0, 1] float) or is
    image-shaped, except the adversarial client's reconstructions (checked for raw images too)."""
    victims = [local_data(cfg, p, num_clients) for p in range(num_clients)]
    image_hashes = {
        hashlib.sha256(img.numpy().tobytes()).hexdigest() for v in victims for img in v.train_images
    } | {
        hashlib.sha256((img.float() / 255).numpy().tobytes()).hexdigest() for v in victims for img in v.train_images
    }
    replies = {f.name.split("-")[1] for f in files if f.name.startswith("reply-")}
    assert {protocol.QUERY_BN_STATS, protocol.QUERY_BN_SMASHED, protocol.TRAIN_STEP} <= replies
    for path in files:
        # the adversary's reply holds its reconstructions (image-shaped by design, scored by the
        # harness); they are still checked below not to be any client's raw image
        is_attack_reply = path.name.startswith(f"reply-{protocol.QUERY_ATTACK}")
        for key, array in np.load(path).items():
            if not is_attack_reply:
                assert tuple(array.shape[-3:]) != (1, 28, 28), f"{path.name}:{key} has an image's shape"
            flat = array.reshape(-1)
            if flat.size % 784 == 0:
                for block in flat.reshape(-1, 784):
                    for candidate in (block, block.astype(np.uint8)):
                        assert hashlib.sha256(candidate.tobytes()).hexdigest() not in image_hashes


@pytest.mark.slow
def test_adversarial_client_reconstructs_and_never_receives_raw_images(tmp_path):
    cfg = RunConfig(
        num_rounds=2, samples_per_client=400, test_samples=300, local_eval_samples=32, seed=5,
        adversary=0, adversary_images=64, attack_epochs=20, gan_steps=100, attack_steps=30,
        adversary_attacks="decoder,gan,white-box",
        bn_recalibration="on",  # its moments and calibration smashed data are checked too
    )
    received = tmp_path / "received"
    received.mkdir()
    summary = simulate(cfg, 3, run_dir=tmp_path / "run", client_app=build_client_app(cfg, mods=[_recording_mod(received)]))

    # the decoder attack is real: undefended smashed data is inverted to SSIM > 0.5
    assert summary["attack_images"] == 64
    assert summary["attack_decoder_ssim"] > 0.5
    assert summary["attack_decoder_mse"] < 0.05
    assert summary["attack_decoder_attacker_accuracy"] > 0.5
    assert 0 <= summary["attack_gan_ssim"] < summary["attack_decoder_ssim"]
    scores = json.loads((tmp_path / "run" / "attacks.json").read_text())["scores"]
    assert set(scores) == {"decoder", "gan", "white-box"}  # no defense: the client input is the original
    # white-box inversion through the client part the adversary holds, no auxiliary data
    assert scores["white-box"]["psnr"] > 20 and scores["white-box"]["mse"] < 0.01, scores["white-box"]
    assert (tmp_path / "run" / "attack_grid.png").stat().st_size > 10_000

    # what the adversary received, and what every client sent: smashed data, gradients, weights and
    # BatchNorm moments, never an image
    files = sorted(received.iterdir())
    attack_messages = [f for f in files if f.name.startswith(protocol.QUERY_ATTACK)]
    assert len(attack_messages) == 1 and len(files) > 10
    _assert_no_raw_images(files, cfg, 3)
    intercepted = np.load(attack_messages[0])
    assert intercepted[f"{protocol.INTERCEPTED}__h"].shape == (64, 64, 14, 14)


@pytest.mark.slow
def test_server_adversary_attacks_every_client_and_no_raw_image_crosses(tmp_path):
    """adversary-role = 'server': the tap keeps a batch of every client, partition 0 included (the
    adversary under role 'client'); the attacks run in the ServerApp, so no query.attack message
    is sent; no client receives or sends a raw image; the decoder learns from the auxiliary pool."""
    cfg = RunConfig(
        num_rounds=1, samples_per_client=100, batch_size=16, test_samples=64, local_eval_samples=16, seed=3,
        adversary=0, adversary_role="server", adversary_images=48, adversary_attacks="white-box,decoder",
        adversary_aux_samples=256, attack_epochs=5, attack_steps=20,
    )
    received = tmp_path / "received"
    received.mkdir()
    recorder = _recording_mod(received, partitions=(0, 1, 2))
    summary = simulate(cfg, 3, run_dir=tmp_path / "run", client_app=build_client_app(cfg, mods=[recorder]))

    attacks = json.loads((tmp_path / "run" / "attacks.json").read_text())
    assert attacks["role"] == "server" and attacks["images"] == 48 == summary["attack_images"]
    assert set(attacks["victims"]) == {"0", "1", "2"}, attacks["victims"]  # partition 0 is a victim too
    assert all(victim["images"] == 16 for victim in attacks["victims"].values())
    for victim in attacks["victims"].values():
        assert set(victim["scores"]) == {"white-box", "decoder"}
        assert victim["scores"]["white-box"]["mse"] < 0.1
    assert set(attacks["scores"]) == {"white-box", "decoder"}
    assert math.isfinite(summary["attack_white-box_psnr"]) and math.isfinite(summary["attack_decoder_psnr"])
    files = sorted(received.iterdir())
    assert not [f for f in files if protocol.QUERY_ATTACK in f.name]  # the attack never left the server
    _assert_no_raw_images(files, cfg, 3)


def test_aux_pool_is_withheld_from_every_partition_and_fixed_across_client_counts(mnist):
    """adversary-aux-samples > 0: the pool (10 % of the training set) is in no client's partition
    for 2 or 10 clients, and the adversary's images drawn from it do not depend on the client count."""
    labels = mnist[0].labels.numpy()
    cfg = RunConfig(adversary_aux_samples=300, seed=7)
    pool = aux_pool(cfg, labels.size)
    assert pool.size == int(labels.size * AUX_POOL_FRACTION) and np.unique(pool).size == pool.size
    drawn = aux_indices(cfg, labels.size)
    assert drawn.size == 300 and np.isin(drawn, pool).all()
    for clients in (2, 10):
        parts = client_partitions(cfg, labels, clients)
        held = np.concatenate(parts)
        assert np.intersect1d(held, pool).size == 0, f"{clients} clients: a partition holds pool images"
        assert held.size + pool.size == labels.size  # iid: every other index is a client's
        again = cfg.replace(partitioner="dirichlet", alpha=0.3)
        assert np.intersect1d(np.concatenate(client_partitions(again, labels, clients)), pool).size == 0
    assert np.array_equal(aux_pool(cfg.replace(num_rounds=9), labels.size), pool)  # fixed by the seed alone
    assert np.array_equal(aux_data(cfg, 0).train_images, aux_data(cfg, SERVER_ADVERSARY).train_images)
    assert sorted(aux_data(cfg, 0).train_labels.tolist()) == sorted(labels[drawn].tolist())
    # 0 (default): nothing is withheld, the partitions are today's
    plain = client_partitions(RunConfig(seed=7), labels, 2)
    assert sum(p.size for p in plain) == labels.size


def test_adversary_role_and_aux_samples_are_validated():
    with pytest.raises(ConfigError, match="'adversary-aux-samples' must be >= 0, got -1"):
        parse_run_config({"adversary-aux-samples": -1})
    with pytest.raises(ConfigError, match="'adversary-role' must be one of"):
        parse_run_config({"adversary-role": "hub"})
    with pytest.raises(ConfigError, match=r"'adversary-role' = 'server' with attacks \['decoder'\] needs"):
        parse_run_config({"adversary": 0, "adversary-role": "server", "adversary-attacks": "decoder,white-box"})
    parse_run_config({"adversary": 0, "adversary-role": "server", "adversary-attacks": "white-box"})
    parse_run_config({"adversary-role": "server"})  # no attack (adversary -1): no pool needed
    with pytest.raises(ConfigError, match="'adversary-aux-samples' = 6001 is more than the auxiliary pool: 6000"):
        simulate({"adversary": 0, "adversary-aux-samples": 6001, "samples-per-client": 100}, 2)
    # role 'server' attacks every client: 'adversary' is a switch, not a partition id
    with pytest.raises(ConfigError, match="'adversary' = 3 must be a partition id below num-clients"):
        simulate({"adversary": 3, "samples-per-client": 100}, 3)
