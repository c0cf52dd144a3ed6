"""PNG grids of originals and reconstructions (the paper's Fig. 4 layout)."""

from __future__ import annotations

from pathlib import Path

import torch


def save_grid(path: Path, rows: dict[str, torch.Tensor], columns: int = 8, title: str | None = None) -> None:
    """One row per entry (label on the left), ``columns`` images each, grey scale in [0, 1]."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(rows), columns, figsize=(1.1 * columns + 1.2, 1.15 * len(rows)), squeeze=False)
    for r, (label, images) in enumerate(rows.items()):
        for c in range(columns):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c < len(images):
                image = images[c].detach().float().clamp(0, 1)
                pixels = image[0] if image.shape[0] == 1 else image.permute(1, 2, 0)
                ax.imshow(pixels.numpy(), cmap="gray", vmin=0, vmax=1)
            else:
                ax.axis("off")
        axes[r][0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
