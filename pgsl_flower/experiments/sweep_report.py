"""``results/<sweep>/report.md`` and its plots, rendered from ``runs.csv`` alone.

Tables give mean ± std over seeds of the finished (``ok``) cells:
- Table I analog: the strongest attack per dataset, strategy and client count
  (lowest MSE, highest PSNR / SSIM, accuracy of a clean classifier on the
  reconstructions), then each attack's scores;
- Table II analog: test accuracy (and PGSL's streams) per dataset, strategy and
  client count;
- privacy at matched utility: per dataset and client count, the defended strategy
  with the lowest best-attack SSIM among those whose mean accuracy is within 1
  point of the undefended strategy's;
- cost: wall time per round, MB up/down per client per round, peak memory.

Plots (PNG, one per dataset): accuracy vs client count per strategy; privacy-
utility (best-attack SSIM vs accuracy, one point per strategy and client count);
communication per client vs client count; wall time per round vs client count.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from pgsl_flower.config import SMASHED_DATA_ATTACKS  # noqa: E402
from pgsl_flower.experiments.sweep import ATTACK_METRICS, COLUMNS, KEY, SweepSpec  # noqa: E402

GROUP = ["dataset", "strategy", "clients"]
#: "Matched utility": mean test accuracy at most this far below the undefended strategy's.
MATCHED_ACCURACY_DROP = 0.01


def matched_utility(ok: pd.DataFrame, undefended: str, max_drop: float = MATCHED_ACCURACY_DROP) -> pd.DataFrame:
    """Per dataset and client count, every strategy's mean accuracy and best-attack scores next
    to the undefended strategy's; ``matched`` when its accuracy is at most ``max_drop`` below.

    Rows are sorted so that, within a setting, the matched strategies come first, most private
    (lowest best-attack SSIM) first: the first matched defended row is the answer to "best
    privacy at matched utility".
    """
    grouped = ok.groupby(GROUP)
    means = grouped[["final_test_accuracy", "best_attack_ssim", "best_attack_mse"]].mean()
    means["accuracy_std"] = grouped.final_test_accuracy.std().fillna(0.0)
    means = means.reset_index()
    base = means.loc[means.strategy == undefended, ["dataset", "clients", "final_test_accuracy", "best_attack_ssim"]]
    rows = means.merge(base, on=["dataset", "clients"], suffixes=("", "_undefended"))
    rows["accuracy_drop"] = rows.final_test_accuracy_undefended - rows.final_test_accuracy
    rows["matched"] = rows.accuracy_drop <= max_drop + 1e-12
    return rows.sort_values(["dataset", "clients", "matched", "best_attack_ssim"],
                            ascending=[True, True, False, True]).reset_index(drop=True)


def _matched_section(ok: pd.DataFrame, spec: SweepSpec) -> list[str]:
    undefended = [s for s in spec.strategies if spec.cell_config(spec.datasets[0], s, spec.seeds[0]).get(
        "defense", "none") == "none"]
    if not undefended or ok.best_attack_ssim.isna().all():
        return []
    rows = matched_utility(ok, undefended[0])
    lines = [(f"## Privacy at matched utility (accuracy within {MATCHED_ACCURACY_DROP * 100:.0f} point of "
              f"`{undefended[0]}`, the undefended strategy)"), "",
             ("Means over seeds. Privacy is the strongest attack's SSIM (lower = more private); MSE for reference. "
              "A 1-point margin is below the seed-to-seed spread of many settings (`accuracy_std`): read "
              "`matched` together with it."), ""]
    for (dataset, clients), group in rows.groupby(["dataset", "clients"], sort=True):
        defended = group[(group.strategy != undefended[0]) & group.matched]
        base_ssim, base_accuracy = group.best_attack_ssim_undefended.iloc[0], group.final_test_accuracy_undefended.iloc[0]
        if len(defended):
            ssim = defended.best_attack_ssim.iloc[0]
            best = (f"**{defended.strategy.iloc[0]}**, SSIM {ssim:.3f} against {base_ssim:.3f} undefended"
                    + ("" if ssim < base_ssim else ": no more private than no defense"))
        else:
            best = "none: no defense keeps accuracy within the margin"
        lines.append(f"- {dataset}, {clients} clients (undefended accuracy {base_accuracy * 100:.2f} %): "
                     f"best privacy at matched utility: {best}.")
    table = rows.assign(
        accuracy=(rows.final_test_accuracy * 100).round(2), accuracy_std=(rows.accuracy_std * 100).round(2),
        drop_points=(rows.accuracy_drop * 100).round(2),
        ssim=rows.best_attack_ssim.round(3), mse=rows.best_attack_mse.round(4),
    )[["dataset", "clients", "strategy", "accuracy", "accuracy_std", "drop_points", "matched", "ssim", "mse"]]
    return [*lines, "", _markdown(table), ""]


def _mean_std(frame: pd.DataFrame, column: str, scale: float = 1.0, digits: int = 2) -> pd.Series:
    grouped = frame.groupby(GROUP)[column]
    mean, std, count = grouped.mean() * scale, grouped.std().fillna(0.0) * scale, grouped.count()
    return pd.Series(
        [f"{m:.{digits}f} ± {s:.{digits}f}" if n else "" for m, s, n in zip(mean, std, count, strict=True)],
        index=mean.index,
    )


def _table(frame: pd.DataFrame, columns: dict[str, tuple[str, float, int]]) -> str:
    present = {label: spec for label, spec in columns.items() if frame[spec[0]].notna().any()}
    table = pd.DataFrame({label: _mean_std(frame, col, scale, digits) for label, (col, scale, digits) in present.items()})
    table["seeds"] = frame.groupby(GROUP).size()
    return _markdown(table.reset_index())


def _markdown(table: pd.DataFrame) -> str:
    header = "| " + " | ".join(map(str, table.columns)) + " |"
    rule = "|" + "---|" * len(table.columns)
    rows = ["| " + " | ".join(str(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join([header, rule, *rows])


def _plot(frame: pd.DataFrame, dataset: str, x: str, y: str, scale: float, ylabel: str, path: Path,
          logx: bool = True) -> None:
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for strategy, group in frame[frame.dataset == dataset].groupby("strategy"):
        stats = group.groupby(x)[y].agg(["mean", "std"]).reset_index().sort_values(x)
        ax.errorbar(stats[x], stats["mean"] * scale, yerr=stats["std"].fillna(0) * scale, marker="o",
                    capsize=3, label=strategy)
    if logx:
        ax.set_xscale("log")
    ax.set_xlabel("clients" if x == "clients" else x)
    ax.set_ylabel(ylabel)
    ax.set_title(dataset)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _privacy_utility(frame: pd.DataFrame, dataset: str, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    cells = frame[(frame.dataset == dataset) & frame.best_attack_ssim.notna()]
    for strategy, group in cells.groupby("strategy"):
        stats = group.groupby("clients")[["final_test_accuracy", "best_attack_ssim"]].mean()
        ax.scatter(stats.final_test_accuracy * 100, stats.best_attack_ssim, label=strategy)
        for clients, row in stats.iterrows():
            ax.annotate(str(clients), (row.final_test_accuracy * 100, row.best_attack_ssim), fontsize=6)
    ax.set_xlabel("test accuracy (%)")
    ax.set_ylabel("best-attack SSIM (lower = more private)")
    ax.set_title(f"{dataset}: privacy vs utility (labels: clients)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(spec: SweepSpec, out_dir: Path) -> str:
    """Render ``out_dir/report.md`` (+ PNGs) from ``out_dir/runs.csv``; returns the markdown."""
    runs = pd.read_csv(out_dir / "runs.csv").reindex(columns=list(COLUMNS))
    cells = {tuple(cell[k] for k in KEY) for cell in spec.cells()}
    runs = runs[[tuple(row) in cells for row in runs[list(KEY)].itertuples(index=False)]]  # the spec's cells only
    ok = runs[runs.status == "ok"].copy()
    lines = [
        f"# Sweep `{spec.name}`",
        "",
        f"Strategies {list(spec.strategies)} x clients {list(spec.clients)} x seeds {list(spec.seeds)} x datasets "
        f"{list(spec.datasets)}; shared run-config `{spec.run_config}`"
        + (f", per dataset `{spec.per_dataset}`" if spec.per_dataset else "")
        + (f"; {spec.total_samples} images split over each cell's clients (samples-per-client = "
           f"{spec.total_samples} // clients)" if spec.total_samples else "") + ".",
        f"Cells finished: {len(ok)} of {len(spec.cells())}. Mean ± std over seeds. Regenerate with "
        f"`python -m pgsl_flower.experiments.sweep report simulations/{spec.name}.toml`.",
        "",
    ]
    if ok.empty:
        lines.append("No finished cells yet.")
    else:
        lines += ["## Table I analog: the strongest attack (MSE on [0, 1] pixels; attacker accuracy: a clean "
                  "classifier on the reconstructions)", "",
                  _table(ok, {"best-attack MSE": ("best_attack_mse", 1.0, 4),
                              "best-attack PSNR dB": ("best_attack_psnr", 1.0, 2),
                              "best-attack SSIM": ("best_attack_ssim", 1.0, 3),
                              "attacker accuracy %": ("best_attacker_accuracy", 100.0, 1)}), ""]
        per_attack = {f"{attack} {label}": (f"{attack}_{metric}", scale, digits)
                      for attack in SMASHED_DATA_ATTACKS
                      for metric, (label, scale, digits) in zip(ATTACK_METRICS, (
                          ("MSE", 1.0, 4), ("PSNR dB", 1.0, 2), ("SSIM", 1.0, 3), ("attacker acc %", 100.0, 1)),
                          strict=True)}
        lines += ["### Each attack", "", _table(ok, per_attack), ""]
        lines += ["## Table II analog: test accuracy %", "",
                  _table(ok, {"accuracy": ("final_test_accuracy", 100.0, 2),
                              "PGSL recovered": ("final_test_acc_recovered", 100.0, 2),
                              "PGSL fused": ("final_test_acc_fused", 100.0, 2),
                              "PGSL attacked": ("final_test_acc_attacked", 100.0, 2),
                              "DP epsilon": ("final_epsilon", 1.0, 2)}), ""]
        lines += _matched_section(ok, spec)
        lines += ["## Cost", "",
                  _table(ok, {"s per round": ("median_round_seconds", 1.0, 1),
                              "MB up per client per round": ("bytes_up_per_client", 1e-6, 1),
                              "MB down per client per round": ("bytes_down_per_client", 1e-6, 1),
                              "peak memory GiB": ("peak_memory_gib", 1.0, 2)}), ""]
        for dataset in sorted(ok.dataset.unique()):
            plots = {
                f"{dataset}_accuracy_vs_clients.png": ("final_test_accuracy", 100.0, "test accuracy (%)"),
                f"{dataset}_communication_vs_clients.png": ("bytes_up_per_client", 1e-6, "MB up per client per round"),
                f"{dataset}_round_time_vs_clients.png": ("median_round_seconds", 1.0, "wall time per round (s)"),
            }
            for name, (column, scale, label) in plots.items():
                _plot(ok, dataset, "clients", column, scale, label, out_dir / name)
            _privacy_utility(ok, dataset, out_dir / f"{dataset}_privacy_utility.png")
            lines += [f"## Plots: {dataset}", ""] + [f"![{n}]({n})" for n in
                                                    [*plots, f"{dataset}_privacy_utility.png"]] + [""]
    failed = runs[runs.status != "ok"]
    if len(failed):
        lines += ["## Failed cells (retried on the next `run`)", ""]
        lines += [f"- {' / '.join(str(r[k]) for k in KEY)}: {r['error']}" for _, r in failed.iterrows()]
    text = "\n".join(lines) + "\n"
    (out_dir / "report.md").write_text(text)
    return text
