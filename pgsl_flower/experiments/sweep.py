"""Sweeps: strategies x client counts x seeds x datasets, one real Flower simulation per cell.

A spec is a TOML file (``simulations/*.toml``)::

    name = "client_scaling"                 # results go to results/<name>/
    datasets = ["mnist"]
    strategies = ["splitfed", "laplace", "pgsl"]   # presets strategies/<name>.toml
    clients = [2, 5, 10]
    seeds = [1, 2, 3]
    folds = [0, 1, 2, 3, 4]                 # optional: cross-validation folds as test (mias, mias-roi only;
                                            # the other datasets run their fixed split once per seed)
    total-samples = 2000                    # optional: split over each cell's clients
    [run-config]                            # every cell, after the preset
    num-rounds = 2
    adversary = 0                           # the adversarial client: attack columns
    [dataset-config.mias]                   # per-dataset run-config, after [run-config]
    image-size = 64
    [variants.laplace-b2]                   # optional: a named strategy = a preset + overrides
    preset = "laplace"                      # (applied after [run-config]); list it in 'strategies'
    laplace-scale = 2.0

Each cell runs ``python -m pgsl_flower`` in its own process (a fresh Ray), its
peak memory is the process tree's PSS. ``runs.csv`` gets one row per cell and is
rewritten after each: finished cells are skipped when the sweep is started
again, a failed cell is recorded with its error (and retried next time) and the
sweep goes on. A progress bar with the ETA goes to stderr when it is a terminal.

    python -m pgsl_flower.experiments.sweep run simulations/client_scaling.toml
    python -m pgsl_flower.experiments.sweep report simulations/client_scaling.toml
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
import time
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import pandas as pd
from flwr.common.config import parse_config_args
from tqdm import tqdm

from pgsl_flower.config import SMASHED_DATA_ATTACKS, ConfigError, parse_run_config
from pgsl_flower.experiments.cells import is_done, load_runs, run_cell
from pgsl_flower.experiments.memory import run_with_peak_memory
from pgsl_flower.pilot.local import config_arg

ROOT = Path(__file__).resolve().parents[2]
#: Datasets with cross-validation folds (run-config 'fold').
CV_DATASETS = ("mias", "mias-roi")
KEY = ("dataset", "strategy", "clients", "seed", "fold")
ATTACK_METRICS = ("mse", "psnr", "ssim", "attacker_accuracy", "attacker_balanced_accuracy")
#: How the strongest attack is chosen, per metric: lowest MSE, highest PSNR / SSIM / attacker
#: accuracy. No one metric ranks the attacks: SSIM at data range 1 can rank a near-exact
#: reconstruction with faint background noise below a blurrier one with 100x its MSE.
STRONGEST_BY = {"mse": min, "psnr": max, "ssim": max, "attacker_accuracy": max, "attacker_balanced_accuracy": max}
#: The metrics whose strongest attack is named in runs.csv (``best_attack_by_<metric>``).
NAMED_METRICS = ("mse", "psnr", "ssim", "attacker_accuracy")
#: Final test scores copied from a run's summary.json.
SUMMARY_SCORES = (
    "final_test_accuracy", "final_test_balanced_accuracy", "final_test_macro_f1", "final_test_auroc",
    *(f"final_test_{kind}_{stream}" for kind in ("acc", "bacc") for stream in ("recovered", "fused", "attacked")),
    "final_epsilon",
)
COLUMNS = (
    *KEY, "status", *SUMMARY_SCORES, "best_attack", *(f"best_attack_by_{m}" for m in NAMED_METRICS), "best_attack_mse", "best_attack_psnr", "best_attack_ssim",
    "best_attacker_accuracy", "best_attacker_balanced_accuracy", "median_round_seconds", "bytes_up_per_client",
    "bytes_down_per_client", "peak_memory_gib", "final_test_confusion", "run_dir", "wall_seconds", "error",
    *(f"{attack}_{metric}" for attack in SMASHED_DATA_ATTACKS for metric in ATTACK_METRICS),
)


@dataclass(frozen=True)
class SweepSpec:
    """A parsed ``simulations/*.toml``."""

    name: str
    datasets: tuple[str, ...]
    strategies: tuple[str, ...]
    clients: tuple[int, ...]
    seeds: tuple[int, ...]
    run_config: dict[str, Any] = field(default_factory=dict)
    #: Cross-validation folds (run-config 'fold') as one more axis for the datasets that have folds;
    #: (-1,): every dataset's fixed split.
    folds: tuple[int, ...] = (-1,)
    per_dataset: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: When set, every cell's clients share this many images: samples-per-client = total // clients
    #: (the same federation split over more hospitals, rather than more data with more hospitals).
    total_samples: int = 0
    #: Named strategies beyond the presets: name -> {"preset": <preset name>, <run-config overrides>...}
    #: (a defense at another strength, another cut layer: the points of a privacy-utility frontier).
    variants: dict[str, dict[str, Any]] = field(default_factory=dict)
    strategies_dir: Path = ROOT / "strategies"

    def family(self, strategy: str) -> str:
        """The preset a strategy is built on: itself, or a variant's ``preset``."""
        return str(self.variants[strategy]["preset"]) if strategy in self.variants else strategy

    def cell_config(
        self, dataset: str, strategy: str, seed: int, clients: int | None = None, fold: int = -1
    ) -> dict[str, Any]:
        """The run-config of one cell: preset, then [run-config], then the variant's overrides,
        then [dataset-config.<name>]."""
        preset = parse_config_args([str(self.strategies_dir / f"{self.family(strategy)}.toml")])
        overrides = {k: v for k, v in self.variants.get(strategy, {}).items() if k != "preset"}
        config = {**preset, **self.run_config, **overrides, **self.per_dataset.get(dataset, {}),
                  "dataset": dataset, "seed": seed}
        if self.total_samples and clients:
            config["samples-per-client"] = self.total_samples // clients
        if fold >= 0:
            config["fold"] = fold
        return config

    def folds_of(self, dataset: str) -> tuple[int, ...]:
        """The spec's folds for a dataset with cross-validation folds, else (-1,) (its fixed split)."""
        return self.folds if dataset in CV_DATASETS else (-1,)

    def cells(self) -> list[dict[str, Any]]:
        """Seed-major order, so an interrupted sweep has whole seeds: every strategy x setting of seed 1 first
        (and, with folds, every fold of seed 1)."""
        return [
            {"dataset": d, "strategy": s, "clients": n, "seed": seed, "fold": fold}
            for seed in self.seeds for d in self.datasets for fold in self.folds_of(d) for n in self.clients
            for s in self.strategies
        ]


def load_spec(path: str | Path) -> SweepSpec:
    """Read and validate a spec; every cell's run-config is checked before anything runs."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as err:
        raise ConfigError(f"sweep spec {path}: {err}") from err
    missing = [k for k in ("name", "datasets", "strategies", "clients", "seeds") if k not in raw]
    if missing:
        raise ConfigError(f"sweep spec {path}: missing key(s) {missing}")
    folds = raw.get("folds", [-1])
    if not isinstance(folds, list) or not folds or not all(isinstance(f, int) and f >= -1 for f in folds):
        raise ConfigError(f"sweep spec {path}: 'folds' must be a non-empty list of fold ids (>= 0), got {folds!r}")
    total = raw.get("total-samples", 0)
    if not isinstance(total, int) or isinstance(total, bool) or total < 0:
        raise ConfigError(f"sweep spec {path}: 'total-samples' must be a non-negative integer, got {total!r}")
    variants = raw.get("variants", {})
    bad = [name for name, v in variants.items() if not isinstance(v, dict) or not isinstance(v.get("preset"), str)] \
        if isinstance(variants, dict) else ["variants"]
    if bad:
        raise ConfigError(f"sweep spec {path}: [variants.<name>] {bad[0]!r} needs a 'preset' (a strategies/ preset "
                          "name) and its run-config overrides; quote names with dots: [variants.\"laplace-b0.5\"]")
    spec = SweepSpec(
        name=str(raw["name"]), datasets=tuple(raw["datasets"]), strategies=tuple(raw["strategies"]),
        clients=tuple(int(n) for n in raw["clients"]), seeds=tuple(int(s) for s in raw["seeds"]),
        run_config=dict(raw.get("run-config", {})),
        per_dataset={k: dict(v) for k, v in raw.get("dataset-config", {}).items()},
        total_samples=total, folds=tuple(folds), variants={k: dict(v) for k, v in variants.items()},
    )
    unused = sorted(set(spec.variants) - set(spec.strategies))
    if unused:
        raise ConfigError(f"sweep spec {path}: variant(s) {unused} are not listed in 'strategies'")
    for strategy in spec.strategies:
        preset = spec.family(strategy)
        if not (spec.strategies_dir / f"{preset}.toml").is_file():
            raise ConfigError(f"sweep spec {path}: strategy {strategy!r} has no preset {spec.strategies_dir}/{preset}.toml")
    if any(n < 1 for n in spec.clients) or not spec.clients or not spec.seeds:
        raise ConfigError(f"sweep spec {path}: 'clients' must be integers >= 1 and 'seeds' non-empty")
    if spec.total_samples and (spec.total_samples < max(spec.clients) or any(
            "samples-per-client" in c for c in (spec.run_config, *spec.per_dataset.values()))):
        raise ConfigError(f"sweep spec {path}: 'total-samples' = {spec.total_samples} must be at least the largest "
                          "client count, and replaces 'samples-per-client' (do not set both)")
    for dataset in spec.datasets:
        for strategy in spec.strategies:
            for fold in spec.folds_of(dataset):
                try:
                    parse_run_config(spec.cell_config(dataset, strategy, spec.seeds[0], max(spec.clients), fold))
                except ConfigError as err:
                    raise ConfigError(f"sweep spec {path}, cell {dataset}/{strategy}/fold {fold}: {err}") from err
    return spec


def _best_attack(summary: Mapping[str, Any]) -> dict[str, Any]:
    """Each attack's scores, and the strongest attack of a run *per metric* (:data:`STRONGEST_BY`):
    its value (``best_attack_<metric>``, ``best_attacker_accuracy``) and, for :data:`NAMED_METRICS`,
    its name (``best_attack_by_<metric>``). ``best_attack`` is the name by SSIM (kept for old readers)."""
    names = [n for n in SMASHED_DATA_ATTACKS if f"attack_{n}_ssim" in summary]  # not the "input" reference row
    if not names:
        return {}
    value = {m: {n: float(summary[f"attack_{n}_{m}"]) for n in names} for m in ATTACK_METRICS
             if all(f"attack_{n}_{m}" in summary for n in names)}
    strongest = {m: STRONGEST_BY[m](names, key=value[m].__getitem__) for m in value}
    return {
        **{f"{n}_{m}": value[m][n] for n in names for m in value},
        "best_attack": strongest["ssim"],
        **{f"best_attack_by_{m}": strongest[m] for m in NAMED_METRICS if m in strongest},
        **{f"best_attack_{m}": value[m][strongest[m]] for m in ("mse", "psnr", "ssim")},
        "best_attacker_accuracy": value["attacker_accuracy"][strongest["attacker_accuracy"]],
        **({"best_attacker_balanced_accuracy": value["attacker_balanced_accuracy"][strongest["attacker_balanced_accuracy"]]}
           if "attacker_balanced_accuracy" in value else {}),
    }


def cell_label(cell: Mapping[str, Any], sep: str = "-") -> str:
    """The cell's key values joined (its run folder's name), the fold only when it has one."""
    return sep.join(str(cell[k]) for k in KEY if k != "fold" or cell[k] >= 0)


def run_one(spec: SweepSpec, cell: Mapping[str, Any], runs_dir: Path) -> dict[str, Any]:
    """One cell in its own process; returns its row (raises if the run fails)."""
    run_dir = runs_dir / cell_label(cell)
    run_dir.mkdir(parents=True, exist_ok=True)
    config = spec.cell_config(cell["dataset"], cell["strategy"], cell["seed"], cell["clients"], cell["fold"])
    command = [sys.executable, "-m", "pgsl_flower", "--num-clients", str(cell["clients"]),
               "--run-dir", str(run_dir), "--run-config", config_arg(config)]
    code, peak = run_with_peak_memory(command, run_dir / "log.txt", ROOT)
    if code != 0:
        tail = (run_dir / "log.txt").read_text(errors="replace").strip().splitlines()[-1:] or [""]
        raise RuntimeError(f"exit {code}: {tail[0][:300]} (log: {run_dir / 'log.txt'})")
    summary = json.loads((run_dir / "summary.json").read_text())
    if "attack_error" in summary:
        raise RuntimeError(f"attack failed: {summary['attack_error']}")
    with (run_dir / "metrics.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    return {
        **{k: summary.get(k, "") for k in SUMMARY_SCORES},
        **_best_attack(summary),
        "median_round_seconds": statistics.median(float(r["round_seconds"]) for r in rows),
        "bytes_up_per_client": statistics.mean(int(r["bytes_up_per_client"]) for r in rows),
        "bytes_down_per_client": statistics.mean(int(r["bytes_down_per_client"]) for r in rows),
        "peak_memory_gib": round(peak / 2**30, 3),
        "final_test_confusion": json.dumps(summary["final_test_report"]["confusion_matrix"]),
        "run_dir": str(run_dir),
    }


def load_sweep_runs(path: Path) -> pd.DataFrame:
    """``runs.csv`` with every column of :data:`COLUMNS`; rows written before folds existed get fold -1."""
    runs = load_runs(path, COLUMNS)
    runs = runs.reindex(columns=list(dict.fromkeys([*COLUMNS, *runs.columns])))
    runs["fold"] = runs["fold"].fillna(-1).astype(int)
    return runs


def progress_bar(total: int, done: int, name: str, file: TextIO | None = None) -> tqdm:
    """A bar over a sweep's cells with its ETA (mean time per cell run so far); silent when
    ``file`` (default stderr) is not a terminal, so logs and CI output stay clean."""
    return tqdm(total=total, initial=done, desc=name, unit="cell", smoothing=0, disable=None, file=file,
                dynamic_ncols=True)


def run_sweep(spec: SweepSpec, out_dir: Path, runs_dir: Path, log: Callable[[str], None] = tqdm.write) -> None:
    """Every cell not yet ``ok`` in ``out_dir/runs.csv``, in spec order, under a progress bar."""
    path = out_dir / "runs.csv"
    runs = load_sweep_runs(path)
    cells = spec.cells()
    pending = [(index, cell) for index, cell in enumerate(cells, 1) if not is_done(runs, cell)]
    with progress_bar(len(cells), len(cells) - len(pending), spec.name) as bar:
        for index, cell in pending:
            bar.set_postfix_str(cell_label(cell, "/"))
            started = time.perf_counter()
            runs = run_cell(runs, cell, lambda cell=cell: run_one(spec, cell, runs_dir), path, COLUMNS)
            status = "ok" if is_done(runs, cell) else "failed"
            log(f"[{index}/{len(cells)}] {cell}: {status} in {time.perf_counter() - started:.0f} s")
            bar.update()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pgsl_flower.experiments.sweep", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=("run", "report"))
    parser.add_argument("spec", type=Path)
    parser.add_argument("--results", type=Path, default=Path("results"), help="parent of results/<name>/")
    parser.add_argument("--runs", type=Path, default=Path("outputs/sweeps"), help="parent of the per-cell run folders")
    args = parser.parse_args(argv)
    try:
        spec = load_spec(args.spec)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    out_dir = args.results / spec.name
    if args.command == "run":
        run_sweep(spec, out_dir, (args.runs / spec.name).resolve())
    from pgsl_flower.experiments.sweep_report import write_report

    print(write_report(spec, out_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
