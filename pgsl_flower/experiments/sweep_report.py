"""``results/<sweep>/report.md`` and its plots, rendered from ``runs.csv`` alone.

Tables give mean ± std over seeds (and cross-validation folds) of the finished (``ok``) cells:
- Table I analog: the strongest attack per dataset, strategy and client count,
  chosen per metric (lowest MSE, highest PSNR / SSIM, accuracy and balanced
  accuracy of a clean classifier on the reconstructions), which attack that is
  for each metric, then each attack's scores;
- Table II analog: test accuracy, balanced accuracy, macro-F1 and AUROC (and PGSL's
  streams) per dataset, strategy and client count; strategies whose balanced
  accuracy is at chance (a model that predicts one class) are named;
- privacy at matched utility: per dataset and client count, the defended strategy
  with the lowest strongest-attack SSIM, and the one with the lowest strongest-attack
  PSNR, among those whose mean utility is within 1 point of the undefended
  strategy's (each claim names its metric); utility is balanced accuracy on the
  medical (imbalanced) datasets and accuracy on MNIST;
- paired against the undefended strategy: each strategy's utility minus the undefended
  one's, run by run on the same seed and fold (the same test images), mean ± std and a
  paired t-test, so that "a defense costs utility" is read against the spread;
- the privacy-utility frontier (specs with ``[variants]``: a defense at several strengths):
  per dataset and client count, each setting's utility against the strongest attack's PSNR
  and SSIM with error bars, the Pareto front per defense family, the most private setting at
  each utility level and what pushing the strongest attack below 15 dB PSNR costs;
- cost: wall time per round, MB up/down per client per round, peak memory.

Plots (PNG, one per dataset): accuracy vs client count per strategy; privacy-
utility (best-attack SSIM vs accuracy, one point per strategy and client count);
communication per client vs client count; wall time per round vs client count.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from pgsl_flower.classification_metrics import report_from_confusion  # noqa: E402
from pgsl_flower.config import MEDICAL_DATASETS, SMASHED_DATA_ATTACKS  # noqa: E402
from pgsl_flower.data import DATASET_CLASSES  # noqa: E402
from pgsl_flower.experiments.curves import load_curves, plot_learning_curves  # noqa: E402
from pgsl_flower.experiments.sweep import (  # noqa: E402
    ATTACK_METRICS,
    COLUMNS,
    KEY,
    NAMED_METRICS,
    STRONGEST_BY,
    SweepSpec,
    load_sweep_runs,
)

GROUP = ["dataset", "strategy", "clients"]
#: "Matched utility": mean test utility at most this far below the undefended strategy's.
MATCHED_ACCURACY_DROP = 0.01
#: A strategy whose mean balanced accuracy is within this of chance (1 / classes) learned one class.
CHANCE_MARGIN = 0.02


def utility_column(dataset: str) -> str:
    """Balanced accuracy on the medical (imbalanced) datasets, accuracy on MNIST."""
    return "final_test_balanced_accuracy" if dataset in MEDICAL_DATASETS else "final_test_accuracy"


def matched_utility(ok: pd.DataFrame, undefended: str, max_drop: float = MATCHED_ACCURACY_DROP) -> pd.DataFrame:
    """Per dataset and client count, every strategy's mean utility (:func:`utility_column`) and
    best-attack scores next to the undefended strategy's; ``matched`` when its utility is at most
    ``max_drop`` below.

    Rows are sorted so that, within a setting, the matched strategies come first, most private
    (lowest best-attack SSIM) first: the first matched defended row is the answer to "best
    privacy at matched utility".
    """
    ok = ok.assign(utility=[row[utility_column(row.dataset)] for _, row in ok.iterrows()])
    grouped = ok.groupby(GROUP)
    means = grouped[["utility", "best_attack_ssim", "best_attack_psnr", "best_attack_mse"]].mean()
    means["utility_std"] = grouped.utility.std()  # NaN for a single run: no spread to report
    means = means.reset_index()
    base = means.loc[means.strategy == undefended,
                     ["dataset", "clients", "utility", "best_attack_ssim", "best_attack_psnr"]]
    rows = means.merge(base, on=["dataset", "clients"], suffixes=("", "_undefended"))
    rows["utility_drop"] = rows.utility_undefended - rows.utility
    rows["matched"] = rows.utility_drop <= max_drop + 1e-12
    return rows.sort_values(["dataset", "clients", "matched", "best_attack_ssim"],
                            ascending=[True, True, False, True]).reset_index(drop=True)


@dataclass(frozen=True)
class PairedDifference:
    """``other - base`` over runs paired by their index (e.g. seed and fold)."""

    mean: float
    std: float
    runs: int
    p_value: float  # two-sided paired t-test


def paired_difference(base: pd.Series, other: pd.Series) -> PairedDifference | None:
    """The paired difference of two score series indexed alike (None with fewer than 2 pairs)."""
    from scipy.stats import ttest_rel

    both = pd.concat([base.rename("base"), other.rename("other")], axis=1).dropna()
    if len(both) < 2:
        return None
    diff = both.other - both.base
    return PairedDifference(float(diff.mean()), float(diff.std(ddof=1)), len(both),
                            float(ttest_rel(both.other, both.base).pvalue))


def paired_against(ok: pd.DataFrame, undefended: str) -> pd.DataFrame:
    """Per dataset, client count and strategy: its utility (:func:`utility_column`) minus the
    undefended strategy's, paired by seed and fold (rows with fewer than 2 pairs are left out)."""
    rows = []
    for (dataset, clients), group in ok.groupby(["dataset", "clients"], sort=True):
        column = utility_column(dataset)
        runs = {s: g.set_index(["seed", "fold"])[column] for s, g in group.groupby("strategy")}
        if undefended not in runs:
            continue
        for strategy, scores in sorted(runs.items()):
            if strategy == undefended or (paired := paired_difference(runs[undefended], scores)) is None:
                continue
            rows.append({"dataset": dataset, "clients": clients, "strategy": strategy,
                         "utility": column.removeprefix("final_test_"), "difference_points": paired.mean * 100,
                         "std_points": paired.std * 100, "paired_runs": paired.runs, "p_value": paired.p_value})
    return pd.DataFrame(rows)


def _paired_section(ok: pd.DataFrame, spec: SweepSpec) -> list[str]:
    undefended = undefended_strategy(spec)
    rows = paired_against(ok, undefended) if undefended is not None else pd.DataFrame()
    if rows.empty:
        return []
    table = rows.assign(difference_points=rows.difference_points.round(2), std_points=rows.std_points.round(2),
                        p_value=rows.p_value.round(3))
    return [f"## Paired against `{undefended}`", "",
            "Each strategy's utility minus the undefended strategy's, run by run on the same seed and fold (so the "
            "same test images): mean ± std of the difference in points, and a two-sided paired t-test. A difference "
            "within its spread (large p) does not tell the two apart.", "", _markdown(table), ""]


def at_chance(ok: pd.DataFrame) -> pd.DataFrame:
    """Settings whose mean balanced accuracy is within :data:`CHANCE_MARGIN` of chance."""
    means = ok.groupby(GROUP).final_test_balanced_accuracy.mean().reset_index()
    chance = means.dataset.map(lambda d: 1 / len(DATASET_CLASSES[d]))
    return means[means.final_test_balanced_accuracy <= chance + CHANCE_MARGIN]


def undefended_strategy(spec: SweepSpec) -> str | None:
    """The spec's first strategy without a defense that is a plain preset (not a variant, e.g. another
    cut layer): the reference of the matched-utility and frontier sections."""
    return next((s for s in spec.strategies if s not in spec.variants
                 and spec.cell_config(spec.datasets[0], s, spec.seeds[0]).get("defense", "none") == "none"), None)


def _matched_section(ok: pd.DataFrame, spec: SweepSpec) -> list[str]:
    undefended = undefended_strategy(spec)
    if undefended is None or ok.best_attack_ssim.isna().all():
        return []
    rows = matched_utility(ok, undefended)
    lines = [(f"## Privacy at matched utility (utility within {MATCHED_ACCURACY_DROP * 100:.0f} point of "
              f"`{undefended}`, the undefended strategy)"), "",
             ("Utility is balanced accuracy on the medical datasets (imbalanced classes) and accuracy on MNIST; "
              "means over runs. Privacy is the strongest attack's SSIM and, separately, its PSNR (the strongest "
              "attack chosen per metric; lower = more private): each claim names its metric, and the two can name "
              "different defenses. MSE for reference. "
              "A 1-point margin is below the run-to-run spread of many settings (`utility_std`): read "
              "`matched` together with it."), ""]
    chance = {(r.dataset, r.strategy, r.clients) for r in at_chance(ok).itertuples()}
    for (dataset, clients), group in rows.groupby(["dataset", "clients"], sort=True):
        defended = group[(group.strategy != undefended) & group.matched]
        base_utility = group.utility_undefended.iloc[0]
        name = "balanced accuracy" if dataset in MEDICAL_DATASETS else "accuracy"
        if (dataset, undefended, clients) in chance:
            best = f"not meaningful: `{undefended}` itself is at chance (it predicts one class)"
        elif len(defended):
            best = "; ".join(_most_private(defended, metric, group[f"best_attack_{metric}_undefended"].iloc[0])
                             for metric in ("ssim", "psnr"))
        else:
            best = f"none: no defense keeps {name} within the margin"
        lines.append(f"- {dataset}, {clients} clients (undefended {name} {base_utility * 100:.2f} %): "
                     f"best privacy at matched utility: {best}.")
    table = rows.assign(
        utility=(rows.utility * 100).round(2), utility_std=[("" if pd.isna(v) else round(v * 100, 2)) for v in rows.utility_std],
        drop_points=(rows.utility_drop * 100).round(2),
        ssim=rows.best_attack_ssim.round(3), psnr=rows.best_attack_psnr.round(2), mse=rows.best_attack_mse.round(4),
    )[["dataset", "clients", "strategy", "utility", "utility_std", "drop_points", "matched", "ssim", "psnr", "mse"]]
    return [*lines, "", _markdown(table), ""]


def _most_private(defended: pd.DataFrame, metric: str, undefended: float) -> str:
    """The matched defended strategy whose strongest attack scores lowest on ``metric`` (SSIM or
    PSNR: lower = more private), against the undefended value."""
    label = "SSIM" if metric == "ssim" else "PSNR"
    scored = defended.dropna(subset=[f"best_attack_{metric}"])
    if scored.empty:
        return f"by {label}, no matched defense has an attack score"
    row = scored.loc[scored[f"best_attack_{metric}"].idxmin()]
    value, label, digits = row[f"best_attack_{metric}"], "SSIM" if metric == "ssim" else "PSNR", 3 if metric == "ssim" else 2
    unit = "" if metric == "ssim" else " dB"
    return (f"by {label}, **{row.strategy}** ({value:.{digits}f}{unit} against {undefended:.{digits}f}{unit} undefended"
            + (")" if value < undefended else ": no more private than no defense)"))


def strongest_attack_names(ok: pd.DataFrame, metric: str) -> pd.Series:
    """Per dataset, strategy and client count: the attack whose mean ``metric`` over runs is the
    strongest (:data:`STRONGEST_BY`), from the per-attack columns (so older ``runs.csv`` files work)."""
    attacks = [a for a in SMASHED_DATA_ATTACKS if f"{a}_{metric}" in ok and ok[f"{a}_{metric}"].notna().any()]
    means = ok.groupby(GROUP)[[f"{a}_{metric}" for a in attacks]].mean()

    def pick(row: pd.Series) -> str:
        scored = {a: row[f"{a}_{metric}"] for a in attacks if pd.notna(row[f"{a}_{metric}"])}
        return STRONGEST_BY[metric](scored, key=scored.__getitem__) if scored else ""

    return means.apply(pick, axis=1)


def _strongest_attacks(ok: pd.DataFrame) -> str:
    labels = {"mse": "by MSE", "psnr": "by PSNR", "ssim": "by SSIM", "attacker_accuracy": "by attacker accuracy"}
    table = pd.DataFrame({labels[m]: strongest_attack_names(ok, m) for m in NAMED_METRICS})
    return _markdown(table.reset_index())


#: Utility levels of the frontier table: points below the undefended strategy's utility.
FRONTIER_DROPS = (1.0, 2.0, 5.0, 10.0)
#: The PSNR the strongest attack must fall below for the "what does it cost" line.
TARGET_PSNR = 15.0


def pareto_front(utility: Sequence[float], leakage: Sequence[float]) -> list[bool]:
    """Which points no other point dominates: none has utility >= and leakage <= (lower leakage =
    more private), with one of the two strict."""
    points = list(zip(utility, leakage, strict=True))
    return [not any(u2 >= u and l2 <= l and (u2 > u or l2 < l) for u2, l2 in points) for u, l in points]


def frontier_points(ok: pd.DataFrame, spec: SweepSpec) -> pd.DataFrame:
    """Per dataset, client count and strategy: its family (preset), mean and std over runs of the
    utility (:func:`utility_column`) and of the strongest attack's PSNR and SSIM (chosen per metric),
    and whether it is on its family's Pareto front by PSNR."""
    ok = ok.assign(utility=[row[utility_column(row.dataset)] for _, row in ok.iterrows()])
    grouped = ok.groupby(GROUP)
    points = grouped[["utility", "best_attack_psnr", "best_attack_ssim"]].agg(["mean", "std", "count"])
    points.columns = [f"{c}_{s}" for c, s in points.columns]  # count: runs with that score (attacks can fail)
    points = points.fillna({c: 0.0 for c in points.columns if c.endswith("_std")}).reset_index()
    points["runs"] = grouped.size().values
    points["family"] = points.strategy.map(spec.family)
    points["front"] = False
    for _, group in points.groupby(["dataset", "clients", "family"]):
        points.loc[group.index, "front"] = pareto_front(group.utility_mean, group.best_attack_psnr_mean)
    for metric in ("psnr", "ssim"):  # across families: which family's settings make up the frontier
        points[f"overall_front_{metric}"] = False
        for _, group in points.groupby(["dataset", "clients"]):
            scored = group[group[f"best_attack_{metric}_mean"].notna()]
            points.loc[scored.index, f"overall_front_{metric}"] = pareto_front(
                scored.utility_mean, scored[f"best_attack_{metric}_mean"])
    return points


def overall_front_summary(group: pd.DataFrame, metric: str) -> str:
    """The settings of one dataset and client count on the Pareto front of all families together
    by ``metric`` ("psnr" or "ssim"), from most useful to most private, each with its family."""
    front = group[group[f"overall_front_{metric}"]].sort_values("utility_mean", ascending=False)
    return ", ".join(f"{row.strategy} ({row.family})" for row in front.itertuples())


def _frontier_section(ok: pd.DataFrame, spec: SweepSpec, out_dir: Path) -> list[str]:
    """Utility against the strongest attack (PSNR, SSIM), each setting of each defense family."""
    undefended = undefended_strategy(spec)
    if not spec.variants or undefended is None or ok.best_attack_psnr.isna().all():
        return []
    points = frontier_points(ok, spec)
    lines = ["## Privacy-utility frontier", "",
             f"Every setting (a defense family at one strength, or a cut layer) against the strongest attack, chosen "
             f"per metric (lower PSNR / SSIM = more private); mean ± std over runs. `front`: on its family's Pareto "
             f"front by PSNR (no setting of the family has both higher utility and lower PSNR); `overall front`: on the "
             f"front of all families together, by PSNR and by SSIM (the families that dominate). Utility levels are "
             f"points below `{undefended}` (no defense).", ""]
    for (dataset, clients), group in points.groupby(["dataset", "clients"], sort=True):
        base = group[group.strategy == undefended]
        if base.empty:
            continue
        base_utility, base_psnr = base.utility_mean.iloc[0], base.best_attack_psnr_mean.iloc[0]
        lines += [f"### {dataset}, {clients} clients (no defense: utility {base_utility * 100:.2f} %, strongest-attack "
                  f"PSNR {base_psnr:.2f} dB)", ""]
        for drop in FRONTIER_DROPS:
            within = group[((base_utility - group.utility_mean) * 100 <= drop + 1e-9)
                           & group.best_attack_psnr_mean.notna() & group.best_attack_ssim_mean.notna()]
            if within.empty:
                lines.append(f"- utility within {drop:g} point{'' if drop == 1 else 's'}: no setting with attack scores.")
                continue
            by_psnr = within.loc[within.best_attack_psnr_mean.idxmin()]
            by_ssim = within.loc[within.best_attack_ssim_mean.idxmin()]
            lines.append(f"- utility within {drop:g} point{'' if drop == 1 else 's'}: most private by PSNR **{by_psnr.strategy}** "
                         f"({by_psnr.best_attack_psnr_mean:.2f} dB, utility {by_psnr.utility_mean * 100:.2f} %); by SSIM "
                         f"**{by_ssim.strategy}** ({by_ssim.best_attack_ssim_mean:.3f}, utility "
                         f"{by_ssim.utility_mean * 100:.2f} %).")
        lines.append(f"- Pareto front of all families together, most useful first: by PSNR "
                     f"{overall_front_summary(group, 'psnr')}; by SSIM {overall_front_summary(group, 'ssim')}.")
        below = group[group.best_attack_psnr_mean < TARGET_PSNR]
        if below.empty:
            lines.append(f"- strongest attack below {TARGET_PSNR:g} dB PSNR: no setting gets there.")
        else:
            best = below.loc[below.utility_mean.idxmax()]
            lines.append(f"- strongest attack below {TARGET_PSNR:g} dB PSNR: best utility **{best.strategy}** "
                         f"({best.best_attack_psnr_mean:.2f} dB), at a cost of "
                         f"{(base_utility - best.utility_mean) * 100:.2f} points.")
        table = group.assign(
            utility=_spread_column(group, "utility", scale=100), psnr=_spread_column(group, "best_attack_psnr"),
            ssim=_spread_column(group, "best_attack_ssim", digits=3),
        ).sort_values(["family", "utility_mean"], ascending=[True, False])
        table = table.rename(columns={"overall_front_psnr": "overall front PSNR", "overall_front_ssim": "overall front SSIM"})
        lines += ["", _markdown(table[["strategy", "family", "utility", "psnr", "ssim", "front", "overall front PSNR",
                                       "overall front SSIM", "runs"]]), ""]
        name = f"{dataset}_{clients}_frontier.png"
        _plot_frontier(group, f"{dataset}, {clients} clients", utility_column(dataset), out_dir / name)
        lines += [f"![{name}]({name})", ""]
    return lines


def _spread_column(points: pd.DataFrame, column: str, scale: float = 1.0, digits: int = 2) -> list[str]:
    """:func:`mean_and_spread` of a :func:`frontier_points` column (its ``_mean``, ``_std``, ``_count``)."""
    return [mean_and_spread(m * scale, d * scale, n, digits) for m, d, n in zip(
        points[f"{column}_mean"], points[f"{column}_std"], points[f"{column}_count"], strict=True)]


def _plot_frontier(group: pd.DataFrame, title: str, utility: str, path: Path) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric, label in zip(axes, ("best_attack_psnr", "best_attack_ssim"), ("PSNR dB", "SSIM"), strict=True):
        for family, points in group.groupby("family"):
            handle = ax.errorbar(points[f"{metric}_mean"], points.utility_mean * 100, xerr=points[f"{metric}_std"],
                                 yerr=points.utility_std * 100, fmt="o", capsize=2, label=family)
            front = points[pareto_front(points.utility_mean, points[f"{metric}_mean"])].sort_values(f"{metric}_mean")
            ax.plot(front[f"{metric}_mean"], front.utility_mean * 100, "-", color=handle[0].get_color(), alpha=0.6)
        ax.set_xlabel(f"strongest attack {label} (lower = more private)")
        ax.set_ylabel(f"test {'balanced accuracy' if utility.endswith('balanced_accuracy') else 'accuracy'} (%)")
        ax.set_title(title)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _pooled_section(ok: pd.DataFrame) -> list[str]:
    """Cross-validated datasets: the confusion matrices of a seed's folds summed, so every image is
    predicted once; balanced accuracy and recall per class of that pooled matrix, mean over seeds."""
    cv = ok[(ok.fold >= 0) & ok.final_test_confusion.notna()]
    if cv.empty:
        return []
    lines = ["## Pooled over cross-validation folds", "",
             "Each seed's folds together predict every image once: the balanced accuracy and recall per class of "
             "their summed confusion matrix (mean over seeds).", "",
             "| dataset | clients | strategy | images | balanced accuracy % | accuracy % | recall per class % | seeds |",
             "|---|---|---|---|---|---|---|---|"]
    for (dataset, clients, strategy), group in cv.groupby(["dataset", "clients", "strategy"]):
        classes = DATASET_CLASSES[dataset]
        reports = [report_from_confusion(torch.tensor(sum(np.array(json.loads(c)) for c in seed_group.final_test_confusion)),
                                         classes) for _, seed_group in group.groupby("seed")]
        recall = torch.stack([r.recall for r in reports]).mean(0)
        lines.append(
            f"| {dataset} | {clients} | {strategy} | {reports[0].total} | "
            f"{100 * np.mean([r.balanced_accuracy for r in reports]):.2f} | {100 * np.mean([r.accuracy for r in reports]):.2f} | "
            + ", ".join(f"{c} {100 * float(v):.0f}" for c, v in zip(classes, recall, strict=True))
            + f" | {len(reports)} |")
    return [*lines, ""]


def mean_and_spread(mean: float, std: float, runs: int, digits: int = 2) -> str:
    """``"mean ± std"`` over ``runs`` runs; the mean alone for one run (a single run has no spread,
    and "± 0.00" would claim one); empty for none."""
    if runs < 1:
        return ""
    return f"{mean:.{digits}f}" if runs == 1 else f"{mean:.{digits}f} ± {std:.{digits}f}"


def _mean_std(frame: pd.DataFrame, column: str, scale: float = 1.0, digits: int = 2) -> pd.Series:
    grouped = frame.groupby(GROUP)[column]
    mean, std, count = grouped.mean() * scale, grouped.std() * scale, grouped.count()
    return pd.Series([mean_and_spread(m, s, n, digits) for m, s, n in zip(mean, std, count, strict=True)],
                     index=mean.index)


def _table(frame: pd.DataFrame, columns: dict[str, tuple[str, float, int]]) -> str:
    present = {label: spec for label, spec in columns.items() if frame[spec[0]].notna().any()}
    table = pd.DataFrame({label: _mean_std(frame, col, scale, digits) for label, (col, scale, digits) in present.items()})
    table["runs"] = frame.groupby(GROUP).size()
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
        ticks = sorted(frame[frame.dataset == dataset][x].unique())
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.minorticks_off()
    ax.set_xlabel("clients" if x == "clients" else x)
    ax.set_ylabel(ylabel)
    ax.set_title(dataset)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _learning_curves(ok: pd.DataFrame, dataset: str, path: Path) -> bool:
    """Test and training utility per round from the cells' own ``metrics.csv`` (their ``run_dir``);
    True when the figure was drawn now or is kept from an earlier render."""
    medical = dataset in MEDICAL_DATASETS
    cells = ok[(ok.dataset == dataset) & ok.run_dir.notna()]
    curves = load_curves((dataset, f"{r.strategy}, {r.clients} clients", Path(r.run_dir)) for r in cells.itertuples())
    columns = ("test_balanced_accuracy", "train_balanced_accuracy") if medical else ("test_accuracy", "train_accuracy")
    return plot_learning_curves(curves, columns, path) or path.exists()


def _privacy_utility(frame: pd.DataFrame, dataset: str, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    cells = frame[(frame.dataset == dataset) & frame.best_attack_ssim.notna()]
    utility = utility_column(dataset)
    for strategy, group in cells.groupby("strategy"):
        stats = group.groupby("clients")[[utility, "best_attack_ssim"]].mean()
        ax.scatter(stats[utility] * 100, stats.best_attack_ssim, label=strategy)
        for clients, row in stats.iterrows():
            ax.annotate(str(clients), (row[utility] * 100, row.best_attack_ssim), fontsize=6)
    ax.set_xlabel(f"test {'balanced accuracy' if dataset in MEDICAL_DATASETS else 'accuracy'} (%)")
    ax.set_ylabel("best-attack SSIM (lower = more private)")
    ax.set_title(f"{dataset}: privacy vs utility (labels: clients)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(spec: SweepSpec, out_dir: Path) -> str:
    """Render ``out_dir/report.md`` (+ PNGs) from ``out_dir/runs.csv``; returns the markdown."""
    runs = load_sweep_runs(out_dir / "runs.csv").reindex(columns=list(COLUMNS))
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
           f"{spec.total_samples} // clients)" if spec.total_samples else "")
        + (f"; cross-validation folds {list(spec.folds)} as test sets" if spec.folds != (-1,) else "") + ".",
        f"Cells finished: {len(ok)} of {len(spec.cells())}. Mean ± std over "
        f"{'seeds x folds' if spec.folds != (-1,) else 'seeds'} (`runs`). Regenerate with "
        f"`python -m pgsl_flower.experiments.sweep report simulations/{spec.name}.toml`.",
        "",
    ]
    attacked = bool(ok.best_attack_ssim.notna().any())
    if ok.empty:
        lines.append("No finished cells yet.")
    elif not attacked:
        lines += ["No adversary in this sweep: utility and cost only.", ""]
    if attacked:
        lines += ["## Table I analog: the strongest attack (MSE on [0, 1] pixels; attacker accuracy: a clean "
                  "classifier on the reconstructions)", "",
                  _table(ok, {"best-attack MSE": ("best_attack_mse", 1.0, 4),
                              "best-attack PSNR dB": ("best_attack_psnr", 1.0, 2),
                              "best-attack SSIM": ("best_attack_ssim", 1.0, 3),
                              "attacker accuracy %": ("best_attacker_accuracy", 100.0, 1),
                              "attacker balanced accuracy %": ("best_attacker_balanced_accuracy", 100.0, 1)}), ""]
        per_attack = {f"{attack} {label}": (f"{attack}_{metric}", scale, digits)
                      for attack in SMASHED_DATA_ATTACKS
                      for metric, (label, scale, digits) in zip(ATTACK_METRICS, (
                          ("MSE", 1.0, 4), ("PSNR dB", 1.0, 2), ("SSIM", 1.0, 3), ("attacker acc %", 100.0, 1),
                          ("attacker bal. acc %", 100.0, 1)), strict=True)}
        lines += ["### Which attack is the strongest, per metric", "",
                  "Each column is the strongest attack for that metric (mean over runs): the Table I values above "
                  "take, per run and per metric, the attack that scores strongest on it, so one row can mix attacks.",
                  "", _strongest_attacks(ok), ""]
        lines += ["### Each attack", "", _table(ok, per_attack), ""]
    if not ok.empty:
        lines += ["## Table II analog: test scores %", "",
                  _table(ok, {"accuracy": ("final_test_accuracy", 100.0, 2),
                              "balanced accuracy": ("final_test_balanced_accuracy", 100.0, 2),
                              "macro-F1": ("final_test_macro_f1", 100.0, 2),
                              "AUROC": ("final_test_auroc", 100.0, 2),
                              "PGSL recovered": ("final_test_acc_recovered", 100.0, 2),
                              "PGSL fused": ("final_test_acc_fused", 100.0, 2),
                              "PGSL attacked": ("final_test_acc_attacked", 100.0, 2),
                              "PGSL recovered bal.": ("final_test_bacc_recovered", 100.0, 2),
                              "PGSL fused bal.": ("final_test_bacc_fused", 100.0, 2),
                              "PGSL attacked bal.": ("final_test_bacc_attacked", 100.0, 2),
                              "DP epsilon": ("final_epsilon", 1.0, 2)}), ""]
        chance = at_chance(ok)
        if len(chance):
            lines += ["**At chance** (mean balanced accuracy within "
                      f"{CHANCE_MARGIN * 100:.0f} points of 1 / classes: the model predicts one class, so its "
                      "accuracy is the class's share and its privacy row compares nothing useful): "
                      + ", ".join(f"{r.dataset} / {r.strategy} / {r.clients} clients "
                                  f"({r.final_test_balanced_accuracy * 100:.1f} %)" for r in chance.itertuples())
                      + ".", ""]
        lines += _pooled_section(ok)
        lines += _paired_section(ok, spec)
        lines += _matched_section(ok, spec) if attacked else []
        lines += _frontier_section(ok, spec, out_dir) if attacked else []
        lines += ["## Cost", "",
                  _table(ok, {"s per round": ("median_round_seconds", 1.0, 1),
                              "MB up per client per round": ("bytes_up_per_client", 1e-6, 1),
                              "MB down per client per round": ("bytes_down_per_client", 1e-6, 1),
                              "peak memory GiB": ("peak_memory_gib", 1.0, 2)}), ""]
        for dataset in sorted(ok.dataset.unique()):
            medical = dataset in MEDICAL_DATASETS
            plots = {
                f"{dataset}_accuracy_vs_clients.png": (utility_column(dataset), 100.0,
                                                       f"test {'balanced accuracy' if medical else 'accuracy'} (%)"),
                f"{dataset}_communication_vs_clients.png": ("bytes_up_per_client", 1e-6, "MB up per client per round"),
                f"{dataset}_round_time_vs_clients.png": ("median_round_seconds", 1.0, "wall time per round (s)"),
            }
            for name, (column, scale, label) in plots.items():
                _plot(ok, dataset, "clients", column, scale, label, out_dir / name)
            figures = list(plots)
            if attacked:
                _privacy_utility(ok, dataset, out_dir / f"{dataset}_privacy_utility.png")
                figures.append(f"{dataset}_privacy_utility.png")
            if _learning_curves(ok, dataset, out_dir / f"{dataset}_learning_curves.png"):
                figures.append(f"{dataset}_learning_curves.png")
            lines += [f"## Plots: {dataset}", ""] + [f"![{n}]({n})" for n in figures] + [""]
    failed = runs[runs.status != "ok"]
    if len(failed):
        lines += ["## Failed cells (retried on the next `run`)", ""]
        lines += [f"- {' / '.join(str(r[k]) for k in KEY)}: {r['error']}" for _, r in failed.iterrows()]
    text = "\n".join(lines) + "\n"
    (out_dir / "report.md").write_text(text)
    return text
