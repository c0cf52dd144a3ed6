"""Learning curves from runs' own ``metrics.csv`` (one row per round), for the reports.

A report passes ``(panel, group, run_dir)`` per finished run; every panel and metric
gets one axis, one thin line per run and the bold mean per group, so a figure that
sits at chance shows whether it ever left it.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from pathlib import Path

import pandas as pd


def load_curves(runs: Iterable[tuple[str, str, Path]]) -> pd.DataFrame:
    """The rounds of every run whose ``run_dir/metrics.csv`` exists, tagged ``panel``, ``group`` and ``run``."""
    frames = [
        pd.read_csv(Path(run_dir) / "metrics.csv").assign(panel=panel, group=group, run=str(run_dir))
        for panel, group, run_dir in runs
        if (Path(run_dir) / "metrics.csv").exists()
    ]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def plot_learning_curves(curves: pd.DataFrame, columns: Sequence[str], path: Path) -> bool:
    """One axis per (panel, column) with a run's metric per round; False (nothing written) when empty."""
    if curves.empty:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    axes_of = [(panel, column) for panel in sorted(curves.panel.unique(), reverse=True) for column in columns
               if column in curves and curves.loc[curves.panel == panel, column].notna().any()]
    if not axes_of:
        return False
    fig, axes = plt.subplots(1, len(axes_of), figsize=(5.2 * len(axes_of), 4.0), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]  # cycled: more groups than colors reuse them
    for ax, (panel, column) in zip(axes[0], axes_of, strict=True):
        part = curves[curves.panel == panel]
        for color, (group, mine) in zip(itertools.cycle(colors), part.groupby("group", sort=False)):
            for _, one in mine.groupby("run"):
                ax.plot(one["round"], one[column], color=color, alpha=0.25, linewidth=0.8)
            mean = mine.groupby("round")[column].mean()
            ax.plot(mean.index, mean.values, color=color, linewidth=2, label=f"{group} (mean of {mine.run.nunique()})")
        ax.set_xlabel("round")
        ax.set_ylabel(column.replace("_", " "))
        ax.set_title(str(panel))
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
