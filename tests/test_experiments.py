import math

import pandas as pd
import pytest
import torch

from pgsl_flower.config import ConfigError, RunConfig, parse_run_config
from pgsl_flower.experiments import table1, table2
from pgsl_flower.experiments.mu_sweep import MUS, attacked_test_images, sweep


def test_mu_sweep_on_a_few_real_attacked_images(tmp_path, monkeypatch):
    monkeypatch.setenv("PGSL_CACHE_DIR", str(tmp_path))
    cfg = RunConfig(defense="pgsl", attack_pixels=10, attack_theta=0.5)
    clean, attacked = attacked_test_images(cfg, 16)
    assert clean.shape == attacked.shape == (16, 28, 28)
    changed = (attacked - clean).abs().gt(1e-3).flatten(1).sum(1)
    assert (changed <= 10).all() and changed.sum() > 0  # the few-pixel attack, as the harness runs it
    rows = sweep(clean, attacked, max_iter=20)
    assert [r["mu"] for r in rows] == list(MUS)
    assert all(math.isfinite(r["mse_mean"]) and r["mse_mean"] >= 0 for r in rows)
    assert rows[0]["attacked_mse_mean"] == float(((attacked - clean) ** 2).mean(dim=(1, 2)).mean())
    assert torch.all(attacked >= 0) and torch.all(attacked <= 1)


@pytest.mark.slow
def test_table2_runs_cells_records_failures_resumes_and_renders(tmp_path, monkeypatch):
    """Two real cells (pixel-attack, pgsl) on small MNIST, plus a cell whose config is invalid."""
    monkeypatch.setenv("PGSL_CACHE_DIR", str(tmp_path / "cache"))
    small = {"samples-per-client": 300, "num-rounds": 1, "batch-size": 32, "test-samples": 300,
             "local-eval-samples": 16}
    monkeypatch.setattr(table2, "SETTINGS", {"mnist": (2, small), "mias": (2, {"batch-size": 0})})
    out = tmp_path / "table2"
    args = ["--out", str(out), "--runs-dir", str(tmp_path / "runs"), "--seeds", "1"]
    assert table2.main([*args, "--datasets", "mias", "mnist", "--defenses", "pixel-attack", "pgsl"]) == 0

    runs = pd.read_csv(out / "runs.csv")
    failed = runs[runs.dataset == "mias"]
    assert (failed.status == "failed").all() and failed.error.str.contains("'batch-size'").all()
    ok = runs[runs.dataset == "mnist"].set_index("defense")
    assert (ok.status == "ok").all() and set(ok.index) == {"pixel-attack", "pgsl"}
    for column in ("final_test_acc_recovered", "final_test_acc_fused", "final_test_acc_attacked"):
        assert 0.0 <= ok.loc["pgsl", column] <= 1.0
    assert pd.isna(ok.loc["pixel-attack", "final_test_acc_fused"])  # one stream only

    table = pd.read_csv(out / "table2.csv")
    assert list(table.row) == [label for label, defense, _ in table2.ROWS if defense != "none"]
    fusion = table[table.row == "PGSL decision fusion"].iloc[0]
    assert fusion.accuracy_mean == pytest.approx(100 * ok.loc["pgsl", "final_test_accuracy"], abs=0.01)
    assert fusion.balanced_mean == pytest.approx(100 * ok.loc["pgsl", "final_test_balanced_accuracy"], abs=0.01)
    assert fusion.paper == 99.8
    assert (out / "table2.png").stat().st_size > 0 and "PGSL decision fusion" in (out / "table2.md").read_text()
    assert (out / "curves.png").stat().st_size > 10_000  # learning curves from the runs' own metrics.csv

    before = (out / "runs.csv").stat().st_mtime_ns
    monkeypatch.setattr(table2, "SETTINGS", {"mnist": (2, small), "mias": (2, {"batch-size": 16})})
    assert table2.main([*args, "--datasets", "mnist", "--defenses", "pixel-attack", "pgsl"]) == 0
    assert (out / "runs.csv").stat().st_mtime_ns == before  # finished cells are not rerun


@pytest.mark.slow
def test_table1_runs_attacks_against_both_defenses_and_renders(tmp_path, monkeypatch):
    """One real seed of each defense on small MNIST, every attack scored, then a resume."""
    small = {"samples-per-client": 300, "num-rounds": 1, "test-samples": 200, "local-eval-samples": 16,
             "attack-epochs": 3, "gan-steps": 30, "attack-steps": 10}
    monkeypatch.setattr(table1, "SETTINGS", {"mnist": (3, small)})
    monkeypatch.setattr(table1, "ADVERSARIAL_TEST_IMAGES", {"mnist": 8})
    out, runs_dir = tmp_path / "table1", tmp_path / "runs"
    args = ["--out", str(out), "--runs-dir", str(runs_dir), "--seeds", "1", "--datasets", "mnist",
            "--gradient-images", "2"]
    assert table1.main(args) == 0

    runs = pd.read_csv(out / "runs.csv").set_index("defense")
    assert (runs.status == "ok").all() and set(runs.index) == {"none", "pgsl"}
    for attack in table1.RECONSTRUCTION_ATTACKS:
        for metric in ("mse", "ssim", "attacker_accuracy"):
            assert runs[f"{attack}_{metric}"].notna().all(), f"{attack}_{metric} missing"
        assert (runs[f"{attack}_mse"] > 0).all() and (runs[f"{attack}_ssim"] <= 1).all()
    for attack in table1.ADVERSARIAL_ATTACKS:
        assert runs[f"adv_{attack}_accuracy"].between(0, 1).all()
    assert (runs.images == 64).all() and (runs.gradient_images == 2).all()

    table = pd.read_csv(out / "table1.csv")
    assert len(table) == 2 * len(table1.RECONSTRUCTION_ATTACKS)
    dlg = table[(table.attack == "dlg") & (table.defense == "pgsl")].iloc[0]
    assert dlg.mse_mean == pytest.approx(runs.loc["pgsl", "dlg_mse"]) and dlg.paper_mse == 0.046
    text = (out / "table1.md").read_text()
    assert "Best attack" in text and "| mnist | fgsm | none |" in text
    assert (out / "fig4_mnist.png").stat().st_size > 10_000

    before = (out / "runs.csv").stat().st_mtime_ns
    assert table1.main(args) == 0
    assert (out / "runs.csv").stat().st_mtime_ns == before  # finished cells are not rerun
    (out / "fig4_mnist.png").unlink()
    assert table1.main([*args, "--report-only"]) == 0  # redrawn from the per-run outputs
    assert (out / "fig4_mnist.png").exists()
    import shutil

    shutil.rmtree(runs_dir)
    drawn = (out / "fig4_mnist.png").stat().st_mtime_ns
    assert table1.main([*args, "--report-only"]) == 0  # tables from runs.csv; the PNG is kept
    assert (out / "fig4_mnist.png").stat().st_mtime_ns == drawn and (out / "table1.md").exists()


@pytest.mark.slow
def test_centralized_reference_learns_breastmnist_and_reports(tmp_path):
    from pgsl_flower.experiments import centralized

    runs = centralized.run({"dataset": "breastmnist", "num-rounds": 5}, [-1], [1], tmp_path)
    row = runs.iloc[0]
    assert row.test_auroc > 0.65, row  # chance is 0.5: five passes over 546 ultrasound images
    assert 0.5 < row.test_balanced_accuracy <= 1.0
    curves = pd.read_csv(tmp_path / "curves.csv")
    assert curves.epoch.tolist() == [1, 2, 3, 4, 5]
    predictions = pd.read_csv(tmp_path / "predictions.csv")
    assert len(predictions) == 156 and set(predictions.columns) >= {"label", "predicted", "p_malignant"}
    report = (tmp_path / "report.md").read_text()
    assert "balanced_accuracy" in report and (tmp_path / "curves.png").stat().st_size > 1000
    with pytest.raises(ConfigError, match="without a defense"):
        centralized.train_centralized(parse_run_config({"dataset": "breastmnist", "defense": "laplace"}))


@pytest.mark.slow
def test_federated_mias_fold_reports_medical_metrics(tmp_path):
    """A real 3-client simulation of one MIAS cross-validation fold with the medical recipe."""
    from pgsl_flower.data import load_dataset
    from pgsl_flower.simulation import simulate

    config = {"dataset": "mias", "fold": 1, "image-size": 32, "num-rounds": 2, "batch-size": 16,
              "samples-per-client": 0, "holdout-fraction": 0.0, "local-eval-samples": 0,
              "server-tower": "pooled", "bn-recalibration": "on", "seed": 2}
    summary = simulate(config, num_clients=3, run_dir=tmp_path)
    _, test = load_dataset("mias", None, 32, seed=2, fold=1, breast_crop=True, laterality=True)
    report = summary["final_test_report"]
    assert report["classes"] == ["normal", "benign", "malignant"]
    assert [sum(row) for row in report["confusion_matrix"]] == list(test.class_counts().values())
    assert set(report["recall_per_class"]) == {"normal", "benign", "malignant"}
    assert 0.0 <= summary["final_test_balanced_accuracy"] <= 1.0 and 0.0 <= summary["final_test_auroc"] <= 1.0
    metrics = pd.read_csv(tmp_path / "metrics.csv")
    assert metrics.test_balanced_accuracy.between(0, 1).all() and metrics.train_balanced_accuracy.between(0, 1).all()
    per_class = pd.read_csv(tmp_path / "per_class.csv")
    assert len(per_class) == 6 and per_class.support.sum() == 2 * len(test)
    confusion = pd.read_csv(tmp_path / "confusion_matrix.csv", index_col=0)
    assert confusion.to_numpy().sum() == len(test)


def test_cell_report_helpers_name_failed_cells_and_summarise_seeds():
    from pgsl_flower.experiments.cells import failure_lines, percent_mean_std

    runs = pd.DataFrame([
        {"messages_in_flight": 1, "seed": 1, "status": "ok", "error": None},
        {"messages_in_flight": 2, "seed": 3, "status": "failed", "error": "RuntimeError: site-b dropped"},
    ])
    assert failure_lines(runs, {"messages_in_flight": "d", "seed": "seed"}) == [
        "", "- failed: d=2 seed=3: RuntimeError: site-b dropped"]
    assert failure_lines(runs[runs.status == "ok"], {"seed": "seed"}) == []
    assert percent_mean_std(pd.Series([0.9, 0.95])) == "92.50 ± 3.54"
    assert percent_mean_std(pd.Series([0.9])) == "90.00 ± 0.00"
