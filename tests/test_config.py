import tomllib
from pathlib import Path

import pytest

from pgsl_flower.config import ConfigError, RunConfig, default_run_config, parse_run_config

ROOT = Path(__file__).resolve().parents[1]


def test_pyproject_defaults_match_runconfig():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert pyproject["tool"]["flwr"]["app"]["config"] == default_run_config()


def test_parse_accepts_defaults_and_overrides():
    cfg = parse_run_config({"num-rounds": 5, "lr": 1, "schedule": "sequential"})
    assert cfg.num_rounds == 5 and cfg.lr == 1.0 and cfg.schedule == "sequential"
    assert parse_run_config(default_run_config()) == RunConfig()


@pytest.mark.parametrize(
    ("key", "value", "fragment"),
    [
        ("batch-size", 0, "'batch-size' must be >= 1"),
        ("num-rounds", 0, "'num-rounds'"),
        ("dataset", "cifar", "'dataset' must be one of"),
        ("schedule", "async", "'schedule' must be one of"),
        ("partitioner", "zipf", "'partitioner'"),
        ("lr", float("nan"), "'lr'"),
        ("lr", -1.0, "'lr'"),
        ("lr-decay", -0.1, "'lr-decay'"),
        ("alpha", 0, "'alpha'"),
        ("holdout-fraction", 1.0, "'holdout-fraction'"),
        ("image-size", 7, "'image-size'"),
        ("batch-size", "64", "'batch-size' must be a int"),
        ("batch-size", True, "'batch-size'"),
        ("fraction-train", 0.0, "'fraction-train' must be in"),
        ("fraction-train", 1.5, "'fraction-train' must be in"),
        ("min-train-clients", 0, "'min-train-clients' must be >= 1"),
        ("defense", "noise", "'defense' must be one of"),
        ("no-such-key", 1, "unknown run-config key 'no-such-key'"),
        ("class-balance", "oversample", "'class-balance' must be one of"),
        ("augment", "heavy", "'augment' must be one of"),
        ("server-tower", "resnet", "'server-tower' must be one of"),
        ("cut-layer", 0, "'cut-layer' must be in 1..6, got 0"),
        ("cut-layer", 7, "'cut-layer' must be in 1..6, got 7"),
        ("bn-recalibration", "auto", "'bn-recalibration' must be one of"),
        ("bn-momentum", 1.5, "'bn-momentum' must be in"),
        ("bn-calibration-samples", 0, "'bn-calibration-samples' must be >= 1"),
        ("cv-folds", 1, "'cv-folds' must be >= 2"),
        ("fold", 5, "'fold' must be -1 or in 0..4"),
        ("fold", 0, "dataset 'mnist' has a fixed train/test split"),
        ("breast-crop", "on", "'breast-crop' = 'on' applies to"),
        ("roi-size", 2048, "'roi-size' must be <= 1024"),
        ("tracking", "wandb", "'tracking' must be one of"),
        ("tracking", "mlflow", "'tracking' = 'mlflow' is not supported: mlflow is not installed"),
    ],
)
def test_bad_values_name_the_key(key, value, fragment):
    with pytest.raises(ConfigError, match=fragment.replace("(", r"\(")):
        parse_run_config({key: value})


def test_medical_defaults_resolve_per_dataset():
    mnist = parse_run_config({})
    assert (mnist.resolved_class_balance, mnist.resolved_augment, mnist.crops_breast, mnist.medical) == (
        "none", "none", False, False)
    mias = parse_run_config({"dataset": "mias", "fold": 2})
    assert (mias.resolved_class_balance, mias.resolved_augment, mias.crops_breast, mias.normalises_laterality) == (
        "loss", "standard", True, True)
    assert mias.resolved_image_size == 128 and mias.medical
    roi = parse_run_config({"dataset": "mias-roi", "class-balance": "sampling", "laterality": "off"})
    assert roi.resolved_image_size == 64 and roi.resolved_class_balance == "sampling"
    assert not roi.crops_breast and not roi.normalises_laterality
    assert parse_run_config({"dataset": "breastmnist"}).resolved_image_size == 28
