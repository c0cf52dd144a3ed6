"""Baseline defenses on the smashed data: noise statistics, distance correlation,
NoPeek's effect on training, and a real simulation with each defense wired in."""

from __future__ import annotations

import pytest
import torch

from pgsl_flower.config import ConfigError, RunConfig, parse_run_config
from pgsl_flower.data import load_dataset
from pgsl_flower.defenses import (
    DPSGD,
    LaplaceNoise,
    MinimaxPerturbation,
    NoPeek,
    distance_correlation,
    dp_epsilon,
    laplace_noise,
    make_defense,
    per_sample_gradients,
)
from pgsl_flower.model import ClientNet, make_optimizer, prepare_input
from pgsl_flower.simulation import simulate


def test_laplace_noise_has_the_laplace_moments_and_is_reproducible():
    scale = 0.7
    noise = laplace_noise((400_000,), scale, torch.Generator().manual_seed(1)).double()
    assert abs(noise.mean()) < 0.01
    assert noise.abs().mean() == pytest.approx(scale, rel=0.01)  # E|n| = b
    assert noise.var() == pytest.approx(2 * scale**2, rel=0.02)  # Var = 2 b^2
    assert (noise.abs() > 5 * scale).double().mean() == pytest.approx(torch.exp(torch.tensor(-5.0)).item(), rel=0.1)
    again = laplace_noise((400_000,), scale, torch.Generator().manual_seed(1)).double()
    assert torch.equal(noise, again)
    assert not laplace_noise((8,), 0.0, torch.Generator().manual_seed(1)).any()
    with pytest.raises(ValueError, match="scale"):
        laplace_noise((8,), float("nan"), torch.Generator())


def test_laplace_defense_adds_seeded_noise_and_leaves_the_input_alone():
    h = torch.randn(4, 64, 14, 14)
    original = h.clone()
    defense = LaplaceNoise(2.0)
    sent = defense.release(h, seed=5)
    assert torch.equal(h, original)
    assert torch.equal(sent, defense.release(h, seed=5)) and not torch.equal(sent, defense.release(h, seed=6))
    assert (sent - h).abs().mean() == pytest.approx(2.0, rel=0.05)
    assert defense.local_loss(h, h) is None


def test_distance_correlation_properties():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1000, 3, generator=g)
    assert float(distance_correlation(x, x)) == pytest.approx(1.0, abs=1e-6)
    assert float(distance_correlation(x, 3 * x + 1)) == pytest.approx(1.0, abs=1e-6)  # scale/shift invariant
    assert float(distance_correlation(x, x**2)) > 0.3  # non-linear dependence is seen
    independent = torch.randn(1000, 3, generator=g)
    assert float(distance_correlation(x, independent)) < 0.15  # the sample statistic is biased above 0
    assert float(distance_correlation(x, x + 0.5 * independent)) > 0.8
    with pytest.raises(ValueError, match="same number"):
        distance_correlation(x, x[:5])


def _train_with(defense, client: ClientNet, images: torch.Tensor, labels: torch.Tensor, steps: int,  # noqa: ANN001
                train_count: int, on_step=None) -> None:  # noqa: ANN001
    """Train ``client`` + a linear head on the first ``train_count`` images, with the
    defense's local loss added; ``on_step(smashed, idx)`` sees each batch first."""
    head = torch.nn.Linear(64 * 14 * 14, 10)
    optimizer = make_optimizer(torch.nn.ModuleList([client, head]), 1e-3, 0.0)
    client.train()
    for step in range(steps):
        idx = torch.arange(step * 64, step * 64 + 64) % train_count
        smashed = client(images[idx])
        loss = torch.nn.functional.cross_entropy(head(smashed.flatten(1)), labels[idx])
        if on_step is not None:
            on_step(smashed, idx)
        extra = defense.local_loss(images[idx], smashed)
        optimizer.zero_grad()
        (loss + extra if extra is not None else loss).backward()
        optimizer.step()
    client.eval()


def _mnist_inputs(count: int) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    train, _ = load_dataset("mnist", None)
    return prepare_input(train.images[:count].float() / 255), train.labels[:count]


def _train_dcor(weight: float, steps: int = 40) -> float:
    """Train a client part + linear head on 256 MNIST images; DCor(x, h) on held-out images."""
    images, labels = _mnist_inputs(320)
    client = ClientNet(1)
    _train_with(NoPeek(weight), client, images, labels, steps, 256)
    with torch.no_grad():
        return float(distance_correlation(images[256:], client(images[256:])))


def test_nopeek_weight_lowers_the_distance_correlation_of_what_is_sent():
    # measured: 0.993 (alpha 0), 0.929 (5), 0.804 (20) after 40 steps
    plain, weighted, strong = _train_dcor(0.0), _train_dcor(5.0), _train_dcor(20.0)
    assert weighted < plain - 0.03 and strong < weighted - 0.05


def _train_perturbed(weight: float, steps: int = 60) -> tuple[float, float]:
    """Client part with a latent perturbation + linear head, minimax against the client's
    simulated adversary. Returns (the simulated adversary's mean loss over the last 20
    steps, the reconstruction MSE on unseen images of a *fresh* decoder fit afterwards)."""
    from pgsl_flower.attacks.decoder import Decoder
    from pgsl_flower.defenses.latent_perturbation import (
        MinimaxPerturbation,
        images_from_inputs,
    )

    images, labels = _mnist_inputs(640)
    client = ClientNet(1, perturbation_bound=1.0)
    defense = MinimaxPerturbation(weight, seed=1)
    adversary_losses = []

    def record(smashed: torch.Tensor, idx: torch.Tensor) -> None:
        with torch.no_grad():
            adversary_losses.append(float(torch.nn.functional.mse_loss(
                defense.adversary(smashed), images_from_inputs(images[idx]))))

    _train_with(defense, client, images, labels, steps, 512, on_step=record)
    with torch.no_grad():
        sent = client(images)
    torch.manual_seed(2)
    decoder = Decoder(1)
    dec_opt = torch.optim.Adam(decoder.parameters(), lr=1e-3)
    for step in range(80):
        idx = torch.arange(step * 64, step * 64 + 64) % 512
        rec = torch.nn.functional.mse_loss(decoder(sent[idx]), images_from_inputs(images[idx]))
        dec_opt.zero_grad()
        rec.backward()
        dec_opt.step()
    decoder.eval()
    with torch.no_grad():
        fresh = float(torch.nn.functional.mse_loss(decoder(sent[512:]), images_from_inputs(images[512:])))
    return sum(adversary_losses[-20:]) / 20, fresh


def test_latent_perturbation_raises_the_simulated_adversarys_loss():
    (plain, plain_fresh), (defended, defended_fresh) = _train_perturbed(0.0), _train_perturbed(5.0)
    print(f"simulated adversary loss: weight 0 {plain:.4f}, weight 5 {defended:.4f}; "
          f"fresh decoder MSE: {plain_fresh:.4f}, {defended_fresh:.4f}")
    assert defended > plain * 1.2


def _dp_gradients(defense: DPSGD, seed: int) -> tuple[torch.nn.Module, list[torch.Tensor]]:
    torch.manual_seed(0)
    model = ClientNet(1, "group")
    x, grad = torch.randn(8, 5, 14, 14), torch.randn(8, 64, 14, 14) / 8
    optimizer = defense.optimizer(make_optimizer(model, 1e-3, 0.0), batch_size=8, seed=seed)
    with per_sample_gradients(model) as wrapped:
        wrapped(x).backward(grad)
        per_sample = [p.grad_sample.clone() for p in model.parameters()]
        plain = [p.grad.clone() for p in model.parameters()]
        optimizer.pre_step()  # clip each sample's gradient, sum, add noise, average
    return model, [per_sample, plain, [p.grad.clone() for p in model.parameters()]]


def test_dp_sgd_clips_each_samples_gradient_and_adds_seeded_noise():
    _, (per_sample, plain, clipped) = _dp_gradients(DPSGD(0.0, 1e-3, 1e-5), seed=1)
    for samples, mean in zip(per_sample, plain, strict=True):  # mean reduction: grad = mean of per-sample grads
        assert samples.shape[0] == 8 and torch.allclose(samples.mean(0), mean, rtol=1e-4, atol=1e-4)
    assert torch.sqrt(sum((g**2).sum() for g in clipped)) <= 1e-3 * (1 + 1e-4)  # mean of vectors of norm <= C
    assert torch.sqrt(sum((g**2).sum() for g in plain)) > 1e-2  # unclipped, far above C
    noisy = [_dp_gradients(DPSGD(1.0, 1e-3, 1e-5), seed=s)[1][2] for s in (7, 7, 8)]
    assert all(torch.equal(a, b) for a, b in zip(noisy[0], noisy[1], strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(noisy[0], noisy[2], strict=True))


def test_dp_epsilon_is_finite_and_grows_with_steps_and_shrinks_with_noise():
    eps = [dp_epsilon(1.0, 0.032, steps, 1e-5) for steps in (10, 100, 1000)]
    assert 0 < eps[0] < eps[1] < eps[2] < float("inf")
    assert dp_epsilon(2.0, 0.032, 1000, 1e-5) < eps[2]
    assert dp_epsilon(0.0, 0.032, 10, 1e-5) == float("inf") and dp_epsilon(1.0, 0.032, 0, 1e-5) == 0.0


def test_defense_config_is_validated():
    assert isinstance(make_defense(parse_run_config({"defense": "laplace", "laplace-scale": 1.5})), LaplaceNoise)
    assert isinstance(make_defense(parse_run_config({"defense": "nopeek"})), NoPeek)
    with pytest.raises(ConfigError, match="laplace-scale"):
        parse_run_config({"laplace-scale": -1.0})
    with pytest.raises(ConfigError, match="defense"):
        parse_run_config({"defense": "magic"})
    with pytest.raises(ConfigError, match="client-norm = 'group'"):
        parse_run_config({"defense": "dp-sgd"})
    assert isinstance(make_defense(parse_run_config({"defense": "dp-sgd", "client-norm": "group"})), DPSGD)
    assert isinstance(make_defense(parse_run_config({"defense": "latent-perturbation"})), MinimaxPerturbation)
    with pytest.raises(ConfigError, match="ldp-bound"):
        parse_run_config({"ldp-bound": 0.0})
    with pytest.raises(ConfigError, match="dp-delta"):
        parse_run_config({"dp-delta": 1.5})


@pytest.mark.slow
@pytest.mark.parametrize("defense", ["laplace", "nopeek", "dp-sgd", "latent-perturbation"])
def test_simulation_with_a_smashed_data_defense_trains_and_is_attacked(tmp_path, defense):
    """The adversary's decoder is scored against ground truth that reproduces the
    defended smashed data the victims sent (noise included)."""
    cfg = RunConfig(
        defense=defense, laplace_scale=0.5, nopeek_weight=0.5, num_rounds=2, samples_per_client=320,
        batch_size=32, test_samples=500, local_eval_samples=32, seed=4, adversary=0,
        adversary_attacks="decoder", adversary_images=16, attack_epochs=2,
        client_norm="group" if defense == "dp-sgd" else "batch",
    )
    summary = simulate(cfg, num_clients=3, run_dir=tmp_path)
    assert "attack_error" not in summary, summary.get("attack_error")
    assert summary["final_test_accuracy"] > 0.3  # chance is 0.1
    assert 0 < summary["attack_decoder_mse"] < 1
    if defense == "dp-sgd":  # Opacus' accountant: 2 rounds x 9 steps at q = 32/288
        assert 0 < summary["final_epsilon"] < float("inf") and summary["dp_delta"] == 1e-5
