"""ServerApp: runs the split-learning rounds and writes the run's outputs.

Per round: train (the configured schedule), evaluate the global test set
through the global client part + server part (evaluation harness, on the
server), evaluate every client's held-out split through the protocol, log one
line, append a row to ``metrics.csv`` (and to the tracker run-config 'tracking' names).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from logging import INFO, WARNING
from pathlib import Path

import torch
from flwr.app import ArrayRecord, Context
from flwr.common.logger import log
from flwr.serverapp import Grid, ServerApp

from pgsl_flower import checkpoint, protocol
from pgsl_flower.attacks.interception import (
    Interceptor,
    ground_truth,
    score_reconstructions,
    server_reconstructions,
    write_attack_outputs,
)
from pgsl_flower.config import RunConfig, parse_run_config
from pgsl_flower.data import ImageDataset
from pgsl_flower.defenses import HARNESS_PARTITION, batch_seed, make_defense
from pgsl_flower.evaluation import evaluate_split
from pgsl_flower.local_data import harness_attacked, load_datasets
from pgsl_flower.metrics import MetricsWriter, write_confusion_matrix, write_json
from pgsl_flower.model import build_client_net, prepare_input, resolve_device, smashed_shape
from pgsl_flower.pgsl.resampling import downsample
from pgsl_flower.pgsl.server_model import STREAMS, PGSLServerModel
from pgsl_flower.result import SplitResult, round_metrics
from pgsl_flower.strategy import ServerModel, SplitTrainer, balanced_class_weights
from pgsl_flower.tracking import open_tracker

NODE_WAIT_SECONDS = 600.0


def _rounded(value: float) -> float | str:
    """A metric for metrics.csv: 6 decimals, or empty when undefined (e.g. AUROC of one class)."""
    return round(value, 6) if math.isfinite(value) else ""


def new_run_dir(cfg: RunConfig, run_id: int | str) -> Path:
    """``<output-dir>/<timestamp>-<run id>``, absolute."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return (Path(cfg.output_dir) / f"{stamp}-{run_id}").resolve()


def harness_inputs(cfg: RunConfig, train_set: ImageDataset, images: torch.Tensor) -> torch.Tensor:
    """Client-part inputs for the global test set, built by the evaluation harness.

    With PGSL (or ``pixel-attack``) the test images go through the same pixel
    attack as the clients' data (:func:`harness_attacked`).
    """
    if not cfg.pixel_attacked:
        return prepare_input(images.float().div_(255.0))
    attacked = harness_attacked(cfg, train_set, images)
    return downsample(attacked["other"].float(), attacked["other-map"].float())


def harness_release(cfg: RunConfig):  # noqa: ANN201
    """What clients would send for the harness's test batches under a smashed-data defense."""
    defense = make_defense(cfg)
    return lambda smashed, start: defense.release(smashed, batch_seed(cfg, HARNESS_PARTITION, start))


def _wait_for_nodes(grid: Grid, minimum: int) -> list[int]:
    deadline = time.monotonic() + NODE_WAIT_SECONDS
    while True:
        nodes = sorted(grid.get_node_ids())
        if len(nodes) >= minimum:
            return nodes
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"{len(nodes)} node(s) connected after {NODE_WAIT_SECONDS:.0f} s, "
                f"run-config 'min-available-clients' is {minimum}"
            )
        time.sleep(1.0)


def checked_arrays(
    record: ArrayRecord, reference: Mapping[str, torch.Tensor], name: str, part: str
) -> dict[str, torch.Tensor]:
    """``record`` as tensors, checked against ``reference`` (same keys, dtypes and shapes, finite).

    Raises ``ValueError`` naming ``name`` (the argument) and ``part`` (what it must hold).
    """
    if not isinstance(record, ArrayRecord):
        raise TypeError(f"{name} must be an ArrayRecord (the {part}'s state dict), got {type(record).__name__}")
    try:
        return protocol.decode_state(record, reference, field=name, max_bytes=1 << 40)
    except protocol.PayloadError as err:
        raise ValueError(f"{name} does not match the {part} (its state dict's keys, dtypes, shapes): {err}") from err


def run_federation(
    grid: Grid,
    cfg: RunConfig,
    run_dir: Path,
    initial_arrays: ArrayRecord | None = None,
    initial_server_arrays: ArrayRecord | None = None,
) -> SplitResult:
    """Run all rounds; returns the per-round metrics, final weights and ``summary.json``'s content.

    ``initial_arrays`` / ``initial_server_arrays``: the client / server part's starting state
    dicts (default: freshly initialised from run-config 'seed'); checked before any node is
    contacted.
    """
    started = time.perf_counter()
    device = resolve_device(cfg.device)
    saved = load_resume_checkpoint(cfg)
    if saved is not None and (initial_arrays is not None or initial_server_arrays is not None):
        raise ValueError("initial_arrays / initial_server_arrays and run-config 'resume-from' exclude each other: "
                         "a resumed run continues from its checkpoint's weights")
    torch.manual_seed(cfg.seed)
    train_set, test_set = load_datasets(cfg)
    if cfg.test_samples:
        test_images, test_labels = test_set.images[: cfg.test_samples], test_set.labels[: cfg.test_samples]
    else:
        test_images, test_labels = test_set.images, test_set.labels
    num_classes = len(train_set.classes)
    channels, size = train_set.images.shape[1], train_set.images.shape[-1]

    client_template = build_client_net(cfg, channels)
    if cfg.defense == "pgsl":
        server: ServerModel | PGSLServerModel = PGSLServerModel(cfg, num_classes, device)
    else:
        server = ServerModel(cfg, num_classes, device)
    initial_weights = {k: v.clone() for k, v in client_template.state_dict().items()}
    if initial_arrays is not None:
        initial_weights = checked_arrays(initial_arrays, initial_weights, "initial_arrays", "client part")
    if initial_server_arrays is not None:
        server.model.load_state_dict(checked_arrays(
            initial_server_arrays, server.model.state_dict(), "initial_server_arrays", "server part"))
    test_inputs = harness_inputs(cfg, train_set, test_images)
    nodes = _wait_for_nodes(grid, cfg.min_available_clients)
    trainer = SplitTrainer(grid, cfg, server, smashed_shape(cfg, train_set.images.shape), num_classes, initial_weights)
    trainer.query_info(nodes)
    nodes = trainer.nodes_by_partition()
    if cfg.resolved_class_balance == "loss":
        server.class_weights = balanced_class_weights(trainer.total_class_counts())
        log(INFO, "pgsl-flower: class-weighted loss, weights %s for classes %s",
            [round(float(w), 3) for w in server.class_weights], list(train_set.classes))
    trainer.run_key = run_dir.name
    first_round, elapsed_before = 1, 0.0
    if saved is not None:
        first_round, elapsed_before = _restore(saved, server, trainer), float(saved["wall_seconds"])
        started -= elapsed_before
        log(INFO, "pgsl-flower: resuming %s after round %d", run_dir, first_round - 1)
    interceptor = _interceptor(cfg, trainer)

    run_dir.mkdir(parents=True, exist_ok=True)
    resolved = {
        **cfg.as_run_config(),
        "num-clients": len(nodes),
        "partition-order": [trainer.partitions[n] for n in nodes],
        "site-names": [trainer.site_names[n] for n in nodes],
    }
    write_json(run_dir / "config.json", resolved)
    writer = MetricsWriter(run_dir, keep_rounds=first_round - 1)
    log(
        INFO, "pgsl-flower: %s, %s, defense %s, %d clients, %d rounds -> %s",
        cfg.dataset, cfg.schedule, cfg.defense, len(nodes), cfg.num_rounds, run_dir,
    )

    row: dict = {}
    rows: dict[int, dict] = {}
    with open_tracker(cfg.tracking, run_dir, first_round) as tracker:  # closed on failure too
        tracker.log_config(resolved)
        for round_num in range(first_round, cfg.num_rounds + 1):
            round_start = time.perf_counter()
            sampled = trainer.sample(cfg.fraction_train, cfg.min_train_clients, cfg.seed, round_num)
            if interceptor is not None:
                interceptor.active = round_num == cfg.num_rounds
                round_weights = {k: v.clone() for k, v in trainer.client_weights.items()}
            stats = trainer.train_round(sampled, round_num)
            client_template.load_state_dict(trainer.client_weights)
            client_template.to(device)
            test = evaluate_split(client_template, server, test_inputs, test_labels, device=device,
                                  release=harness_release(cfg), classes=train_set.classes)
            test_loss, report = test["loss"], test["report"]
            client_template.cpu()
            local, local_report = trainer.evaluate_clients(
                [n for n in sampled if n not in stats.failed], round_num, train_set.classes)
            train_report = stats.train_report(train_set.classes)
            active = len(sampled) - len(stats.failed)
            row = {
                "round": round_num,
                "clients": active,
                "failed_clients": len(stats.failed),
                **{f"test_{name}": _rounded(value) for name, value in report.scalars().items()},
                "test_loss": round(test_loss, 6),
                **{f"test_{kind}_{name}": round(test[f"{kind}_{name}"], 6) if f"{kind}_{name}" in test else ""
                   for kind in ("acc", "bacc") for name in STREAMS},
                "train_accuracy": round(stats.train_accuracy, 6),
                "train_balanced_accuracy": _rounded(train_report.balanced_accuracy) if train_report else "",
                "train_loss": round(stats.train_loss, 6),
                "local_accuracy_mean": round(sum(local.values()) / len(local), 6) if local else "",
                "local_balanced_accuracy": _rounded(local_report.balanced_accuracy) if local_report else "",
                "samples": stats.samples,
                "messages_per_client": stats.messages // max(len(sampled), 1),
                "train_seconds": round(stats.train_seconds, 3),
                "round_seconds": round(time.perf_counter() - round_start, 3),
                "wall_seconds": round(time.perf_counter() - started, 3),
                "bytes_up_per_client": stats.bytes_up // max(len(sampled), 1),
                "bytes_down_per_client": stats.bytes_down // max(len(sampled), 1),
                "epsilon": round(stats.epsilon, 4) if stats.epsilon is not None else "",
            }
            writer.append(row, report)
            tracker.log_round(row)
            rows[round_num] = row
            _save_checkpoint(run_dir, cfg, round_num, server, trainer, row["wall_seconds"])
            if f"acc_{STREAMS[0]}" in test:
                log(INFO, "round %d/%d streams: %s", round_num, cfg.num_rounds,
                    ", ".join(f"{name} {test[f'acc_{name}']:.4f}" for name in STREAMS))
            log(
                INFO,
                "round %d/%d: test acc %.4f balanced %.4f AUROC %.4f loss %.4f | train acc %.4f | local acc %s | "
                "%d samples, %.1f s, up %.1f MB/client, down %.1f MB/client, failed %d",
                round_num, cfg.num_rounds, report.accuracy, report.balanced_accuracy, report.auroc, test_loss,
                stats.train_accuracy,
                row["local_accuracy_mean"], stats.samples, row["round_seconds"],
                row["bytes_up_per_client"] / 1e6, row["bytes_down_per_client"] / 1e6, len(stats.failed),
            )
    torch.save(
        {"client": trainer.client_weights, "server": server.model.state_dict()},
        run_dir / "final_model.pt",
    )
    write_confusion_matrix(run_dir / "confusion_matrix.csv", report)
    attack_summary = {}
    if interceptor is not None:
        attack_summary = _run_adversary(cfg, trainer, interceptor, round_weights, train_set, run_dir, len(nodes))
    summary = {
        "run_dir": str(run_dir),
        "rounds": cfg.num_rounds,
        "clients": len(nodes),
        "final_test_accuracy": row.get("test_accuracy"),
        **{f"final_test_{name}": row[f"test_{name}"] for name in ("balanced_accuracy", "macro_f1", "auroc")},
        "final_test_report": report.as_json(),
        **{  # PGSL: each stream's final accuracy
            f"final_test_{kind}_{name}": row[f"test_{kind}_{name}"]
            for kind in ("acc", "bacc") for name in STREAMS
            if row.get(f"test_{kind}_{name}") not in ("", None)
        },
        **({"final_epsilon": row["epsilon"], "dp_delta": cfg.dp_delta} if row.get("epsilon") not in ("", None) else {}),
        **attack_summary,
        "wall_seconds": round(time.perf_counter() - started, 3),
        "train_samples": sum(trainer.train_sizes.values()),
        # the ServerApp's intra-op threads: results depend on it (summation order), speed too
        "server_torch_threads": torch.get_num_threads(),
    }
    write_json(run_dir / "summary.json", summary)
    log(INFO, "pgsl-flower: done, final test accuracy %.4f, outputs in %s", summary["final_test_accuracy"], run_dir)
    return SplitResult(
        metrics={n: round_metrics(r) for n, r in rows.items()},
        arrays=protocol.encode_state(trainer.client_weights),
        server_arrays=protocol.encode_state(server.model.state_dict()),
        run_dir=run_dir,
        summary=summary,
    )


def load_resume_checkpoint(cfg: RunConfig) -> dict | None:
    """The checkpoint run-config 'resume-from' names, checked against ``cfg`` (None: fresh run)."""
    if not cfg.resume_from:
        return None
    saved = checkpoint.load(checkpoint.server_checkpoint_path(cfg.resume_from))
    checkpoint.check_compatible(saved["config"], cfg.as_run_config(), checkpoint.RESUMABLE_CHANGES)
    if saved["round"] >= cfg.num_rounds:
        raise checkpoint.CheckpointError(
            f"the checkpoint in {cfg.resume_from} is at round {saved['round']}, run-config 'num-rounds' "
            f"is {cfg.num_rounds}: nothing left to run (raise num-rounds to train further)"
        )
    return saved


def resume_run_dir(cfg: RunConfig) -> Path | None:
    """A resumed run writes into the folder of the run it continues."""
    return checkpoint.server_checkpoint_path(cfg.resume_from).resolve().parent if cfg.resume_from else None


def _save_checkpoint(
    run_dir: Path, cfg: RunConfig, round_num: int, server: ServerModel | PGSLServerModel,
    trainer: SplitTrainer, wall_seconds: float,
) -> None:
    """Everything the server needs to continue after ``round_num`` (written atomically)."""
    checkpoint.atomic_save(
        {
            "round": round_num,
            "config": cfg.as_run_config(),
            "server": checkpoint.server_training_state(server),
            "client_weights": trainer.client_weights,
            "forwards": {trainer.partitions[n]: count for n, count in trainer.forwards.items()},
            "partitions": sorted(trainer.partitions.values()),
            "rng": torch.get_rng_state(),
            "wall_seconds": wall_seconds,
        },
        run_dir / checkpoint.SERVER_CHECKPOINT,
    )


def _restore(saved: dict, server: ServerModel | PGSLServerModel, trainer: SplitTrainer) -> int:
    """Load a checkpoint into the server and trainer; returns the first round to run."""
    checkpoint.restore_server(server, saved["server"])
    trainer.client_weights = saved["client_weights"]
    trainer.forwards = {
        node: saved["forwards"].get(partition, 0) for node, partition in trainer.partitions.items()
    }
    trainer.resume_round = int(saved["round"])
    torch.set_rng_state(saved["rng"])
    before, now = saved["partitions"], sorted(trainer.partitions.values())
    if before != now:  # a site missing at the restart, or a simulation with another client count
        log(WARNING, "resuming with partitions %s; the checkpoint's run had %s: results will differ from "
            "an uninterrupted run", now, before)
    return trainer.resume_round + 1


def _interceptor(cfg: RunConfig, trainer: SplitTrainer) -> Interceptor | None:
    """The network tap, if run-config 'adversary' names an adversarial client or ('adversary-role'
    = 'server', 'adversary' >= 0) the server is the adversary: then every client is a victim."""
    if cfg.adversary < 0:
        return None
    if cfg.adversary_role == "server":
        interceptor = Interceptor(None, cfg.adversary_images)
        trainer.tap = interceptor
        return interceptor
    node = next((n for n, p in trainer.partitions.items() if p == cfg.adversary), None)
    if node is None:
        raise RuntimeError(f"run-config 'adversary' = {cfg.adversary}: no connected client has that partition id")
    interceptor = Interceptor(node, cfg.adversary_images)
    trainer.tap = interceptor
    return interceptor


def _run_adversary(
    cfg: RunConfig, trainer: SplitTrainer, interceptor: Interceptor, round_weights: dict[str, torch.Tensor],
    train_set: ImageDataset, run_dir: Path, num_partitions: int,
) -> dict[str, float]:
    """Send the intercepted smashed data to the adversarial client (role 'server': attack here, in
    the ServerApp), score the reconstructions."""
    if not interceptor.batches:
        log(WARNING, "adversary: nothing was intercepted in the final round (no other client trained)")
        return {}
    started = time.perf_counter()
    smashed = interceptor.smashed()
    image_shape = tuple(train_set.images.shape[1:])
    try:
        if interceptor.adversary_node is None:
            reconstructions = server_reconstructions(cfg, smashed, round_weights, image_shape)
        else:
            reconstructions = trainer.request_attack(
                interceptor.adversary_node, smashed, round_weights, image_shape, cfg.attack_names
            )
        truth = ground_truth(cfg, interceptor.batches, trainer.partitions, num_partitions, round_weights)
    except (RuntimeError, protocol.PayloadError) as err:  # the trained model is kept; the attack is reported failed
        log(WARNING, "adversary: attack failed: %s", err)
        return {"attack_error": str(err)}
    scores = score_reconstructions(reconstructions, truth, train_set, cfg.seed, balanced=cfg.medical)
    write_attack_outputs(run_dir, reconstructions, truth, scores, cfg.adversary_role)
    for name, values in scores.items():
        log(INFO, "adversary %s on %d images: MSE %.4f PSNR %.2f dB SSIM %.4f clean-classifier acc %.3f (balanced %.3f)",
            name, len(truth.labels), values["mse"], values["psnr"], values["ssim"], values["attacker_accuracy"],
            values["attacker_balanced_accuracy"])
    flat = {f"attack_{name}_{metric}": round(value, 6) for name, values in scores.items() for metric, value in values.items()}
    return {**flat, "attack_images": len(truth.labels), "attack_seconds": round(time.perf_counter() - started, 3)}


def build_server_app(override: RunConfig | None = None, run_dir: Path | None = None) -> ServerApp:
    """The ServerApp; ``override``/``run_dir`` replace the run config and output folder."""
    server_app = ServerApp()

    @server_app.main()
    def main(grid: Grid, context: Context) -> None:
        cfg = override if override is not None else parse_run_config(context.run_config)
        run_federation(grid, cfg, run_dir or resume_run_dir(cfg) or new_run_dir(cfg, context.run_id))

    return server_app


app = build_server_app()
