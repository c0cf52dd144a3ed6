"""Stratified, grouped k-fold cross-validation splits (scikit-learn's ``StratifiedGroupKFold``).

With 322 mammograms a single 50-image test split measures little: a MIAS
figure should rest on every image being predicted once, by a model that did not
train on it. Grouping keeps related samples on one side of every split (the two
breasts of a woman; all patches of one image).
"""

from __future__ import annotations

import functools

import numpy as np

__all__ = ["cv_split", "fold_assignment"]


@functools.lru_cache(maxsize=16)
def _assignment(labels: bytes, groups: bytes, folds: int, seed: int) -> np.ndarray:
    y = np.frombuffer(labels, dtype=np.int64)
    g = np.frombuffer(groups, dtype=np.int64)
    fold_of = np.empty(y.size, dtype=np.int64)
    # imported here: scikit-learn costs ~1-2 s to import, and every deployment message starts a
    # fresh ClientApp process that imports this package (only MIAS folds need it)
    from sklearn.model_selection import StratifiedGroupKFold

    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    for k, (_, test) in enumerate(splitter.split(np.zeros(y.size), y, g)):
        fold_of[test] = k
    fold_of.setflags(write=False)
    return fold_of


def fold_assignment(labels: np.ndarray, groups: np.ndarray, folds: int = 5, seed: int = 0) -> np.ndarray:
    """The fold (0..folds-1) of every sample: stratified by ``labels``, never splitting a group.

    Seeded: the same arguments give the same folds. Raises ValueError naming the
    argument when there are fewer groups than folds or ``folds`` < 2.
    """
    y = np.ascontiguousarray(labels, dtype=np.int64)
    g = np.ascontiguousarray(groups, dtype=np.int64)
    if y.ndim != 1 or y.shape != g.shape:
        raise ValueError(f"labels {y.shape} and groups {g.shape} must be 1-D of the same length")
    if isinstance(folds, bool) or not isinstance(folds, (int, np.integer)) or folds < 2:
        raise ValueError(f"folds: must be an int >= 2, got {folds!r}")
    if np.unique(g).size < folds:
        raise ValueError(f"folds: {folds} folds need at least as many groups, got {np.unique(g).size}")
    return _assignment(y.tobytes(), g.tobytes(), int(folds), int(seed))


def cv_split(
    labels: np.ndarray, groups: np.ndarray, fold: int, folds: int = 5, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Sorted int64 ``(train_idx, test_idx)`` of fold ``fold`` (0-based)."""
    if isinstance(fold, bool) or not isinstance(fold, (int, np.integer)) or not 0 <= fold < folds:
        raise ValueError(f"fold: must be in 0..{folds - 1}, got {fold!r}")
    fold_of = fold_assignment(labels, groups, folds, seed)
    return np.flatnonzero(fold_of != fold).astype(np.int64), np.flatnonzero(fold_of == fold).astype(np.int64)
