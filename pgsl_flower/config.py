"""Run configuration: every run-config key, its default, and its validation.

The defaults here mirror ``[tool.flwr.app.config]`` in ``pyproject.toml``
(``tests/test_config.py`` checks they agree). Keys use Flower's hyphenated
spelling; attributes use underscores.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

DATASETS = ("mnist", "mias", "mias-roi", "breastmnist")
#: Datasets of medical images: class-balanced loss and augmentation by default ("auto").
MEDICAL_DATASETS = ("mias", "mias-roi", "breastmnist")
SWITCHES = ("auto", "on", "off")
CLASS_BALANCES = ("auto", "none", "loss", "sampling")
AUGMENTATIONS = ("auto", "none", "flip", "standard")
SERVER_TOWERS = ("paper", "pooled")
#: Run-config 'cut-layer': the client part holds conv1..conv<k> of the seven (pgsl_flower.model).
CUT_LAYERS = (1, 2, 3, 4, 5, 6)
SCHEDULES = ("splitfed", "sequential")
PARTITIONERS = ("iid", "dirichlet", "pathological", "shard", "linear", "exponential")
#: PathologicalPartitioner's class assignment modes (run-config 'class-assignment').
CLASS_ASSIGNMENTS = ("random", "deterministic", "first-deterministic")
#: How site-folder images of any aspect become square (pgsl_flower.data.site_image.RESIZE_RULES).
SITE_RESIZES = ("pad", "crop")
DEVICES = ("auto", "cpu", "cuda")
#: Run-config 'payload-dtype': how smashed data and gradients travel (pgsl_flower.protocol.PAYLOAD_DTYPES).
PAYLOAD_DTYPES = ("float32", "float16")
DEFENSES = ("none", "pixel-attack", "pgsl", "laplace", "nopeek", "dp-sgd", "latent-perturbation")
CLIENT_NORMS = ("batch", "group")
#: Defenses whose client input is the intentional pixel attack + saliency channel.
PIXEL_ATTACK_DEFENSES = ("pixel-attack", "pgsl")
#: Reconstruction attacks the adversarial client can run on intercepted smashed data.
SMASHED_DATA_ATTACKS = (
    "decoder", "gan", "white-box", "white-box-l1", "white-box-denoised", "white-box-refined", "unsplit",
)
#: Who the honest-but-curious adversary is (run-config 'adversary-role'): a client or the server.
ADVERSARY_ROLES = ("client", "server")
#: Attacks that learn from auxiliary images (the server has none of its own).
AUX_DATA_ATTACKS = ("decoder", "gan", "white-box-denoised", "white-box-refined")
#: Experiment trackers a run can write its per-round metrics to (pgsl_flower.tracking).
TRACKERS = ("none", "tensorboard")
#: Trackers named in the issue but not installed with this project: refused with a clear message.
UNSUPPORTED_TRACKERS = ("mlflow",)


class ConfigError(ValueError):
    """A run-config value is missing, of the wrong type, or out of range."""


@dataclass(frozen=True)
class RunConfig:
    """Validated run configuration (one attribute per run-config key)."""

    dataset: str = "mnist"
    data_dir: str = ""  # empty: PGSL_DATA_DIR, then datasets/, then ../shared/data
    image_size: int = 0  # 0: the dataset's default (MNIST 28, MIAS 128, MIAS ROI 64, BreastMNIST 28)
    fold: int = -1  # MIAS / MIAS ROI: -1 the paper's test split, else this cross-validation fold as test
    cv_folds: int = 5  # folds of the stratified, patient-grouped cross-validation ('fold' >= 0)
    breast_crop: str = "auto"  # MIAS: crop to the breast, background blacked out (auto: on for mias)
    laterality: str = "auto"  # MIAS: mirror so the chest wall is on the left (auto: on for mias, mias-roi)
    roi_size: int = 256  # mias-roi: patch window in pixels of the 1024 x 1024 mammogram
    site_resize: str = "pad"  # site folders: pad (background value) | crop to a square, then resize to image-size
    class_balance: str = "auto"  # none | loss (class-weighted) | sampling (auto: loss on medical data)
    augment: str = "auto"  # none | flip | standard: client-side, seeded (auto: standard on medical data)
    server_tower: str = "paper"  # paper (no pooling) | pooled (max-pool after conv3, conv5, conv7)
    cut_layer: int = 2  # the client part holds conv1..conv<k>, the server the rest (1..6; 2: the paper's split)
    bn_recalibration: str = "on"  # re-estimate the aggregated model's BatchNorm statistics each round
    bn_calibration_samples: int = 512  # over all of a round's clients: each uses ceil(this / clients) samples
    bn_momentum: float = 0.1  # BatchNorm running-statistics momentum; 0: cumulative average
    num_rounds: int = 3
    batch_size: int = 64
    lr: float = 0.001
    weight_decay: float = 0.0003
    lr_decay: float = 0.0  # time-based decay lr / (1 + lr-decay * optimizer steps)
    samples_per_client: int = 2000  # 0: the whole partition
    partitioner: str = "iid"
    alpha: float = 0.5  # partitioner 'dirichlet': concentration (smaller: more label skew)
    classes_per_partition: int = 2  # partitioner 'pathological': distinct classes each client holds
    class_assignment: str = "random"  # partitioner 'pathological': random | deterministic | first-deterministic
    shards_per_partition: int = 2  # partitioner 'shard': label-sorted shards per client (0: from shard-size)
    shard_size: int = 0  # partitioner 'shard': samples per shard (0: training set / (clients x shards))
    schedule: str = "splitfed"
    holdout_fraction: float = 0.1
    local_eval_samples: int = 128
    test_samples: int = 0  # 0: the whole global test set
    batches_per_round: int = 0  # 0: one pass over each client's training split
    client_sync_every: int = 0  # SplitFed: also average client parts every k steps (0: round end only)
    batches_per_message: int = 1  # k batches per exchange (deployment); dL/dh stale by <= k-1 client steps
    #: Training messages out to one client at once (deployment): 2 hides an exchange's latency
    #: behind the next one, at one more message of staleness (SplitTrainer._pipeline)
    messages_in_flight: int = 1
    seed: int = 42
    device: str = "auto"
    output_dir: str = "outputs"
    tracking: str = "none"  # none | tensorboard: per-round metrics and the config into <run dir>/tensorboard/
    resume_from: str = ""  # a run folder (or its checkpoint.pt) to continue after its last complete round
    max_payload_mb: float = 64.0
    payload_dtype: str = "float32"  # float32 | float16: smashed data and gradients on the wire (weights stay float32)
    min_available_clients: int = 1
    fraction_train: float = 1.0  # share of the connected clients sampled to train each round
    min_train_clients: int = 1  # ... but at least this many (capped by the clients connected)
    max_in_flight: int = 8  # requests out to clients at once (0: all); see SplitTrainer._pipeline
    reply_timeout: float = 600.0  # seconds to wait for one client reply before dropping it
    # none | pixel-attack (PGSL's client side alone, plain server: Table II baseline) | pgsl
    # | laplace | nopeek (baselines on the smashed data, pgsl_flower.defenses)
    defense: str = "none"
    laplace_scale: float = 0.5  # defense 'laplace': b of the Laplace(0, b) noise on the smashed data
    nopeek_weight: float = 0.5  # defense 'nopeek': alpha of the client's alpha * DCor(x, h) loss term
    dp_noise_multiplier: float = 1.0  # defense 'dp-sgd': Gaussian noise std / clipping norm (Opacus)
    dp_max_grad_norm: float = 1.0  # defense 'dp-sgd': per-sample gradient clipping norm of the client part
    dp_delta: float = 1e-5  # defense 'dp-sgd': the delta epsilon is reported at
    ldp_bound: float = 1.0  # defense 'latent-perturbation': largest change per smashed-data value
    ldp_weight: float = 1.0  # defense 'latent-perturbation': weight of the simulated adversary's loss (minimax)
    client_norm: str = "batch"  # client part's normalisation: batch (paper) | group (DP-SGD needs it)
    pgsl_mu: float = 0.55  # final relaxation weight of the proximal step (paper Fig. 3)
    pgsl_lambda: float = 0.0  # sparsity weight; 0: 1/sqrt(max(m, n))
    pgsl_max_iter: int = 10
    pgsl_tol: float = 1e-4
    attack_pixels: int = 10  # k pixels changed by the intentional pixel attack
    attack_theta: float = 0.5  # how much each attacked pixel is raised
    surrogate_epochs: int = 1  # passes to train each client's saliency surrogate
    adversary: int = -1  # partition id of the adversarial client (-1: none); role 'server': >= 0 turns the attack on
    adversary_role: str = "client"  # client (partition 'adversary') | server (sees every client's smashed data)
    adversary_aux_samples: int = 0  # > 0: adversary images from a pool withheld from every client (0: own partition)
    adversary_attacks: str = "decoder,gan"  # comma-separated, from SMASHED_DATA_ATTACKS
    adversary_images: int = 64  # intercepted victim images the adversary reconstructs (final round)
    attack_epochs: int = 20  # decoder-inversion training passes over the adversary's own data
    gan_steps: int = 1500  # DCGAN generator updates on the adversary's own data
    attack_steps: int = 200  # latent-optimisation steps of the GAN-prior inversion (white-box, unsplit: 5x, in pixel space)

    def __post_init__(self) -> None:
        _check_choice("dataset", self.dataset, DATASETS)
        _check_choice("schedule", self.schedule, SCHEDULES)
        _check_choice("partitioner", self.partitioner, PARTITIONERS)
        _check_choice("class-assignment", self.class_assignment, CLASS_ASSIGNMENTS)
        _check_choice("site-resize", self.site_resize, SITE_RESIZES)
        _check_choice("device", self.device, DEVICES)
        _check_choice("payload-dtype", self.payload_dtype, PAYLOAD_DTYPES)
        _check_choice("defense", self.defense, DEFENSES)
        _check_choice("client-norm", self.client_norm, CLIENT_NORMS)
        _check_choice("breast-crop", self.breast_crop, SWITCHES)
        _check_choice("laterality", self.laterality, SWITCHES)
        _check_choice("class-balance", self.class_balance, CLASS_BALANCES)
        _check_choice("augment", self.augment, AUGMENTATIONS)
        _check_choice("server-tower", self.server_tower, SERVER_TOWERS)
        _check_choice("bn-recalibration", self.bn_recalibration, ("on", "off"))
        if self.tracking in UNSUPPORTED_TRACKERS:
            raise ConfigError(
                f"run-config 'tracking' = {self.tracking!r} is not supported: {self.tracking} is not installed "
                f"with this project; use one of {list(TRACKERS)}"
            )
        _check_choice("tracking", self.tracking, TRACKERS)
        self._check_dataset_options()
        if self.cut_layer not in CUT_LAYERS:
            raise ConfigError(f"run-config 'cut-layer' must be in 1..{CUT_LAYERS[-1]}, got {self.cut_layer!r}")
        if self.server_tower == "pooled" and self.cut_layer > 3:
            raise ConfigError(
                f"run-config 'cut-layer' = {self.cut_layer} with server-tower 'pooled': the pooled tower's "
                "max-pool after conv3 would run on the client and shrink the smashed data; use cut-layer <= 3 "
                "or server-tower 'paper'"
            )
        if self.defense == "dp-sgd" and self.client_norm != "group":
            raise ConfigError(
                "defense 'dp-sgd' needs run-config client-norm = 'group' (per-sample gradients do not "
                f"exist under BatchNorm), got client-norm {self.client_norm!r}"
            )
        for key, low in (
            ("num-rounds", 1),
            ("batch-size", 1),
            ("samples-per-client", 0),
            ("local-eval-samples", 0),
            ("test-samples", 0),
            ("batches-per-round", 0),
            ("client-sync-every", 0),
            ("batches-per-message", 1),
            ("messages-in-flight", 1),
            ("min-available-clients", 1),
            ("min-train-clients", 1),
            ("max-in-flight", 0),
            ("image-size", 0),
            ("pgsl-max-iter", 1),
            ("attack-pixels", 0),
            ("surrogate-epochs", 1),
            ("adversary", -1),
            ("adversary-images", 1),
            ("adversary-aux-samples", 0),
            ("attack-epochs", 1),
            ("attack-steps", 1),
            ("gan-steps", 1),
            ("fold", -1),
            ("cv-folds", 2),
            ("roi-size", 16),
            ("bn-calibration-samples", 1),
            ("classes-per-partition", 1),
            ("shards-per-partition", 0),
            ("shard-size", 0),
        ):
            value = getattr(self, _attr(key))
            if value < low:
                raise ConfigError(f"run-config '{key}' must be >= {low}, got {value!r}")
        if self.partitioner == "shard" and not (self.shards_per_partition or self.shard_size):
            raise ConfigError(
                "partitioner 'shard' needs run-config 'shards-per-partition' or 'shard-size' > 0, got both 0"
            )
        if self.image_size and (self.image_size < 8 or self.image_size % 2):
            raise ConfigError(
                f"run-config 'image-size' must be 0 or an even number >= 8, got {self.image_size!r}"
            )
        for key in ("lr", "alpha", "max-payload-mb", "reply-timeout", "pgsl-mu", "pgsl-tol", "dp-max-grad-norm",
                    "ldp-bound"):
            value = getattr(self, _attr(key))
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(f"run-config '{key}' must be a finite number > 0, got {value!r}")
        for key in ("weight-decay", "lr-decay", "pgsl-lambda", "attack-theta", "laplace-scale", "nopeek-weight",
                    "dp-noise-multiplier", "ldp-weight", "bn-momentum"):
            value = getattr(self, _attr(key))
            if not (math.isfinite(value) and value >= 0):
                raise ConfigError(f"run-config '{key}' must be a finite number >= 0, got {value!r}")
        if not (math.isfinite(self.fraction_train) and 0.0 < self.fraction_train <= 1.0):
            raise ConfigError(f"run-config 'fraction-train' must be in (0, 1], got {self.fraction_train!r}")
        for name in self.attack_names:
            _check_choice("adversary-attacks", name, SMASHED_DATA_ATTACKS)
        if not self.attack_names:
            raise ConfigError("run-config 'adversary-attacks' must name at least one attack")
        _check_choice("adversary-role", self.adversary_role, ADVERSARY_ROLES)
        needs_aux = [name for name in self.attack_names if name in AUX_DATA_ATTACKS]
        if self.adversary >= 0 and self.adversary_role == "server" and needs_aux and not self.adversary_aux_samples:
            raise ConfigError(
                f"run-config 'adversary-role' = 'server' with attacks {needs_aux} needs 'adversary-aux-samples' > 0 "
                "(the server holds no images of its own; 'white-box' needs none), got 'adversary-aux-samples' = 0"
            )
        if self.adversary >= 0 and self.schedule != "splitfed":
            raise ConfigError(
                "run-config 'adversary' needs schedule 'splitfed' (the adversary attacks with the "
                f"round's shared client part), got schedule {self.schedule!r}"
            )
        if not 0.0 < self.dp_delta < 1.0:
            raise ConfigError(f"run-config 'dp-delta' must be in (0, 1), got {self.dp_delta!r}")
        if self.bn_momentum > 1.0:
            raise ConfigError(f"run-config 'bn-momentum' must be in [0, 1], got {self.bn_momentum!r}")
        if not 0.0 <= self.holdout_fraction < 1.0:
            raise ConfigError(
                f"run-config 'holdout-fraction' must be in [0, 1), got {self.holdout_fraction!r}"
            )

    def _check_dataset_options(self) -> None:
        """Options that only some datasets have."""
        if self.fold >= self.cv_folds:
            raise ConfigError(f"run-config 'fold' must be -1 or in 0..{self.cv_folds - 1} ('cv-folds'), got {self.fold}")
        if self.fold >= 0 and self.dataset not in ("mias", "mias-roi"):
            raise ConfigError(
                f"run-config 'fold' = {self.fold}: dataset {self.dataset!r} has a fixed train/test split "
                "(folds apply to mias and mias-roi); leave 'fold' at -1"
            )
        if self.roi_size > 1024:
            raise ConfigError(f"run-config 'roi-size' must be <= 1024 (the mammogram's side), got {self.roi_size}")
        for key, datasets in (("breast-crop", ("mias",)), ("laterality", ("mias", "mias-roi"))):
            if getattr(self, _attr(key)) == "on" and self.dataset not in datasets:
                raise ConfigError(
                    f"run-config '{key}' = 'on' applies to {list(datasets)}, not dataset {self.dataset!r}"
                )

    @property
    def resolved_image_size(self) -> int:
        """Image side length fed to the model (before pixel-unshuffle)."""
        if self.image_size:
            return self.image_size
        return {"mnist": 28, "mias": 128, "mias-roi": 64, "breastmnist": 28}[self.dataset]

    @property
    def medical(self) -> bool:
        """Whether the dataset is medical (imbalanced): balanced accuracy leads its reports."""
        return self.dataset in MEDICAL_DATASETS

    @property
    def crops_breast(self) -> bool:
        """'breast-crop' resolved: 'auto' is on for mias."""
        return self.breast_crop == "on" or (self.breast_crop == "auto" and self.dataset == "mias")

    @property
    def normalises_laterality(self) -> bool:
        """'laterality' resolved: 'auto' is on for mias and mias-roi."""
        return self.laterality == "on" or (self.laterality == "auto" and self.dataset in ("mias", "mias-roi"))

    @property
    def resolved_class_balance(self) -> str:
        """'class-balance' resolved: 'auto' is 'loss' on medical datasets, 'none' on MNIST."""
        if self.class_balance != "auto":
            return self.class_balance
        return "loss" if self.medical else "none"

    @property
    def resolved_augment(self) -> str:
        """'augment' resolved: 'auto' is 'standard' on medical datasets, 'none' on MNIST."""
        if self.augment != "auto":
            return self.augment
        return "standard" if self.medical else "none"

    @property
    def recalibrates_bn(self) -> bool:
        """Whether BatchNorm statistics are re-estimated after each round's aggregation."""
        return self.bn_recalibration == "on"

    @property
    def pixel_attacked(self) -> bool:
        """Whether clients feed the pixel-attacked images and saliency maps to their part."""
        return self.defense in PIXEL_ATTACK_DEFENSES

    @property
    def attack_names(self) -> tuple[str, ...]:
        """The adversarial client's attacks ('adversary-attacks', in order)."""
        return tuple(name.strip() for name in self.adversary_attacks.split(",") if name.strip())

    @property
    def max_payload_bytes(self) -> int:
        """Largest tensor payload accepted in one message."""
        return int(self.max_payload_mb * 1024 * 1024)

    def as_run_config(self) -> dict[str, Any]:
        """The hyphenated mapping Flower uses (``context.run_config``)."""
        return {_key(f.name): getattr(self, f.name) for f in fields(self)}

    def replace(self, **changes: Any) -> RunConfig:
        """A copy with attributes changed (validated again)."""
        return dataclasses.replace(self, **changes)


def _attr(key: str) -> str:
    return key.replace("-", "_")


def _key(attr: str) -> str:
    return attr.replace("_", "-")


def _check_choice(key: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"run-config '{key}' must be one of {list(choices)}, got {value!r}")


def default_run_config() -> dict[str, Any]:
    """Every key with its default, hyphenated."""
    return RunConfig().as_run_config()


def parse_run_config(values: Mapping[str, Any]) -> RunConfig:
    """Validate a run-config mapping (hyphenated keys) into a :class:`RunConfig`.

    Unknown keys, wrong types and out-of-range values raise :class:`ConfigError`
    naming the key and the value. Missing keys take their defaults.
    """
    known = {f.name: f for f in fields(RunConfig)}
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        attr = _attr(str(key))
        if attr not in known:
            raise ConfigError(
                f"unknown run-config key '{key}'; known keys: {sorted(_key(k) for k in known)}"
            )
        kwargs[attr] = _coerce(key, value, type(getattr(RunConfig, attr)))
    return RunConfig(**kwargs)


def _coerce(key: str, value: Any, kind: type) -> Any:
    if kind is bool or isinstance(value, bool):
        raise ConfigError(f"run-config '{key}' must be a {kind.__name__}, got {value!r}")
    if kind is float and isinstance(value, int | float):
        return float(value)
    if kind is int and isinstance(value, float) and value.is_integer():
        return int(value)
    if not isinstance(value, kind):
        raise ConfigError(f"run-config '{key}' must be a {kind.__name__}, got {value!r}")
    return value
