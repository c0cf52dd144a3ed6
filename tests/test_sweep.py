"""A tiny sweep (2 strategies x 2 client counts x 1 seed) of real simulations: it runs,
is killed mid-way, resumes without redoing finished cells, records failed cells, and
renders its report."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from pgsl_flower.config import ConfigError
from pgsl_flower.experiments import cells, sweep
from pgsl_flower.experiments.sweep import load_spec, main, progress_bar
from pgsl_flower.experiments.sweep_report import (
    matched_utility,
    mean_and_spread,
    paired_against,
    paired_difference,
    pareto_front,
    strongest_attack_names,
    write_report,
)

SPEC = """
name = "tiny"
datasets = ["mnist"]
strategies = ["splitfed", "laplace"]
clients = [2, 3]
seeds = [1]
total-samples = 480      # 240 images per client at 2 clients, 160 at 3

[run-config]
num-rounds = 1
batch-size = 32
test-samples = 300
local-eval-samples = 16
adversary = 2            # partition 2 exists only with 3 clients: the 2-client cells fail
adversary-attacks = "decoder"
adversary-images = 16
attack-epochs = 1
"""


def _rows(path: Path) -> pd.DataFrame:
    return pd.read_csv(path) if path.exists() else pd.DataFrame(columns=["status"])


@pytest.mark.slow
def test_sweep_runs_resumes_after_a_kill_records_failures_and_reports(tmp_path):
    spec = tmp_path / "tiny.toml"
    spec.write_text(SPEC)
    results, runs = tmp_path / "results", tmp_path / "runs"
    args = ["run", str(spec), "--results", str(results), "--runs", str(runs)]
    csv_path = results / "tiny" / "runs.csv"

    process = subprocess.Popen([sys.executable, "-m", "pgsl_flower.experiments.sweep", *args],
                               start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and (_rows(csv_path).status == "ok").sum() < 1:
            assert process.poll() is None, "the sweep ended before it could be interrupted"
            time.sleep(0.2)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    first = _rows(csv_path)
    done = first[first.status == "ok"]
    assert len(done) == 1 and len(first) < 4  # interrupted: not every cell has a row

    assert main(args) == 0  # resume
    rows = pd.read_csv(csv_path)
    assert len(rows) == 4
    ok, failed = rows[rows.status == "ok"], rows[rows.status == "failed"]
    assert sorted(ok.clients) == [3, 3] and sorted(failed.clients) == [2, 2]
    assert failed.error.str.contains("adversary").all()
    kept = ok[ok.strategy == done.strategy.iloc[0]].iloc[0]
    assert kept.wall_seconds == done.wall_seconds.iloc[0]  # the finished cell was not run again
    assert (ok.final_test_accuracy > 0.1).all() and (ok.best_attack_ssim > 0).all()
    assert (ok.peak_memory_gib > 0.2).all() and (ok.bytes_up_per_client > 0).all()
    for run_dir in ok.run_dir:
        assert json.loads((Path(run_dir) / "config.json").read_text())["samples-per-client"] == 160

    report = (results / "tiny" / "report.md").read_text()
    assert "Table I analog" in report and "Table II analog" in report and "Failed cells" in report
    assert "Privacy at matched utility" in report and "mnist, 3 clients (undefended accuracy" in report
    assert "decoder SSIM" in report and (ok.decoder_ssim == ok.best_attack_ssim).all()  # the only attack run
    assert (ok.best_attack_by_ssim == "decoder").all() and (ok.best_attack_by_mse == "decoder").all()
    assert "Which attack is the strongest, per metric" in report
    assert "| mnist | laplace | 3 | decoder | decoder | decoder | decoder |" in report
    for name in ("accuracy_vs_clients", "privacy_utility", "communication_vs_clients", "round_time_vs_clients",
                 "learning_curves"):
        assert (results / "tiny" / f"mnist_{name}.png").stat().st_size > 1000
    assert main(["report", str(spec), "--results", str(results)]) == 0  # report alone, from runs.csv


BAD_SPECS = [
    (SPEC.replace('"laplace"', '"nonexistent"'), "strategy 'nonexistent' has no preset"),
    (SPEC.replace("batch-size = 32", "batch-size = 0"), "batch-size"),
    (SPEC.replace("num-rounds = 1", "num-rounds = 1\nsamples-per-client = 100"), "replaces 'samples-per-client'"),
    (SPEC.replace("total-samples = 480", 'total-samples = "many"'),
     "'total-samples' must be a non-negative integer, got 'many'"),
    ("name = 'x'\n", "missing key"),
    (SPEC.replace("seeds = [1]", "seeds = [1]\nfolds = 2"), "'folds' must be a non-empty list"),
]


@pytest.mark.parametrize(("text", "message"), BAD_SPECS,
                         ids=["strategy", "run-config", "both-sizes", "total", "keys", "folds"])
def test_bad_specs_are_refused_naming_the_problem(tmp_path, text, message):
    spec = tmp_path / "bad.toml"
    spec.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_spec(spec)


@pytest.mark.parametrize("spec", sorted((Path(__file__).resolve().parents[1] / "simulations").glob("*.toml")),
                         ids=lambda p: p.stem)
def test_committed_specs_are_valid(spec):
    loaded = load_spec(spec)
    assert loaded.name == spec.stem and len(loaded.cells()) >= 4


def test_paired_difference_matches_a_hand_computed_paired_t_test():
    index = pd.MultiIndex.from_tuples([(1, 0), (1, 1), (1, 2), (2, 0)], names=["seed", "fold"])
    base = pd.Series([0.50, 0.60, 0.40, 0.55], index=index)
    other = pd.Series([0.52, 0.61, 0.45, float("nan")], index=index)  # the (2, 0) run has no pair
    paired = paired_difference(base, other)
    # differences 0.02, 0.01, 0.05: mean 0.026667, sample std 0.020817, t = mean / (std / sqrt 3) = 2.2188, 2 dof
    assert paired.runs == 3
    assert paired.mean == pytest.approx(0.0266667, abs=1e-6)
    assert paired.std == pytest.approx(0.0208167, abs=1e-6)
    assert paired.p_value == pytest.approx(0.1567, abs=1e-3)
    assert paired_difference(base.iloc[:1], other.iloc[:1]) is None


def test_paired_against_pairs_each_strategy_with_the_undefended_one_by_seed_and_fold():
    ok = pd.DataFrame({
        "dataset": ["mias-roi"] * 6 + ["mnist"] * 2, "clients": [5] * 8,
        "strategy": ["splitfed"] * 3 + ["pgsl"] * 3 + ["splitfed", "pgsl"],
        "seed": [1] * 8, "fold": [0, 1, 2, 2, 1, 0, -1, -1],
        "final_test_balanced_accuracy": [0.5, 0.6, 0.7, 0.6, 0.55, 0.4, 0.9, 0.9],
        "final_test_accuracy": [0.9] * 6 + [0.95, 0.90],
    })
    rows = paired_against(ok, "splitfed")
    # mias-roi pairs by fold: 0.4-0.5, 0.55-0.6, 0.6-0.7 (balanced accuracy); mnist has one pair only
    assert rows.strategy.tolist() == ["pgsl"] and rows.dataset.tolist() == ["mias-roi"]
    assert rows.difference_points.iloc[0] == pytest.approx(-25 / 3)
    assert rows.std_points.iloc[0] == pytest.approx(2.8868, abs=1e-4)
    assert rows.utility.iloc[0] == "balanced_accuracy" and rows.paired_runs.iloc[0] == 3


def test_matched_utility_picks_the_most_private_strategy_within_one_point():
    ok = pd.DataFrame({
        "dataset": ["mnist"] * 8, "clients": [5] * 8, "seed": [1, 2] * 4,
        "strategy": ["none"] * 2 + ["noisy"] * 2 + ["close"] * 2 + ["same"] * 2,
        "final_test_accuracy": [0.95, 0.97, 0.80, 0.82, 0.951, 0.951, 0.96, 0.96],
        "best_attack_ssim": [0.9, 0.9, 0.1, 0.1, 0.5, 0.7, 0.8, 0.8],
        "best_attack_mse": [0.001] * 8, "best_attack_psnr": [30.0] * 8,
    })
    rows = matched_utility(ok, "none")
    assert rows.strategy.tolist() == ["close", "same", "none", "noisy"]  # matched first, by SSIM
    assert rows.matched.tolist() == [True, True, True, False]
    assert rows.utility_drop.round(3).tolist() == [0.009, 0.0, 0.0, 0.15]
    assert rows.best_attack_ssim.tolist()[0] == pytest.approx(0.6)


def test_folds_are_an_axis_only_for_datasets_with_folds(tmp_path):
    spec = tmp_path / "cv.toml"
    spec.write_text(SPEC.replace('datasets = ["mnist"]', 'datasets = ["mnist", "mias"]')
                    .replace("seeds = [1]", "seeds = [1]\nfolds = [0, 3]").replace("total-samples = 480", ""))
    cells = load_spec(spec).cells()
    assert {(c["dataset"], c["fold"]) for c in cells} == {("mnist", -1), ("mias", 0), ("mias", 3)}
    assert len(cells) == 2 * 2 * 3  # strategies x client counts x (mnist + 2 mias folds)
    mias = load_spec(spec).cell_config("mias", "splitfed", 1, 3, 3)
    assert mias["fold"] == 3 and "fold" not in load_spec(spec).cell_config("mnist", "splitfed", 1, 3, -1)


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_shows_the_eta_on_a_terminal_and_nothing_elsewhere():
    quiet = io.StringIO()
    with progress_bar(4, 1, "tiny", file=quiet) as bar:
        bar.update()
    assert bar.disable and quiet.getvalue() == ""
    terminal = _Terminal()
    with progress_bar(4, 1, "tiny", file=terminal) as bar:
        bar.update()
    shown = terminal.getvalue()
    assert "tiny" in shown and "2/4" in shown and "<" in shown  # elapsed<remaining: the ETA


def test_sweep_stays_quiet_when_stderr_is_not_a_terminal(tmp_path, monkeypatch, capsys):
    spec = tmp_path / "tiny.toml"
    spec.write_text(SPEC)
    loaded = load_spec(spec)
    monkeypatch.setattr(sweep, "run_one", lambda spec, cell, runs_dir: {"run_dir": str(runs_dir)})
    sweep.run_sweep(loaded, tmp_path / "results", tmp_path / "runs")
    out, err = capsys.readouterr()
    assert err == ""  # captured stderr is no terminal: no bar
    assert out.count(": ok in ") == len(loaded.cells()) == 4
    sweep.run_sweep(loaded, tmp_path / "results", tmp_path / "runs")  # every cell done: nothing to run
    assert capsys.readouterr() == ("", "")


def test_the_strongest_attack_is_chosen_per_metric():
    # the case: a near-exact reconstruction (low MSE, high PSNR) with a lower SSIM than a blurry one
    summary = {
        "attack_decoder_mse": 0.03, "attack_decoder_psnr": 15.2, "attack_decoder_ssim": 0.70,
        "attack_decoder_attacker_accuracy": 0.90,
        "attack_white-box_mse": 0.0003, "attack_white-box_psnr": 35.2, "attack_white-box_ssim": 0.60,
        "attack_white-box_attacker_accuracy": 0.85,
        "attack_input_mse": 0.0, "attack_input_psnr": 99.0, "attack_input_ssim": 1.0,  # a reference row, no attack
        "attack_input_attacker_accuracy": 1.0,
    }
    best = sweep._best_attack(summary)
    assert best["best_attack_by_mse"] == best["best_attack_by_psnr"] == "white-box"
    assert best["best_attack_by_ssim"] == best["best_attack_by_attacker_accuracy"] == best["best_attack"] == "decoder"
    assert (best["best_attack_mse"], best["best_attack_psnr"], best["best_attack_ssim"]) == (0.0003, 35.2, 0.70)
    assert best["best_attacker_accuracy"] == 0.90 and best["white-box_psnr"] == 35.2
    assert "best_attacker_balanced_accuracy" not in best


def _scored_runs(**columns) -> pd.DataFrame:
    base = {"dataset": "mnist", "clients": 5, "fold": -1, "status": "ok", "final_test_balanced_accuracy": 0.9}
    rows = pd.DataFrame(columns)
    return rows.assign(**{k: v for k, v in base.items() if k not in rows})


def test_the_report_names_the_strongest_attack_per_metric_from_the_per_attack_columns():
    ok = _scored_runs(strategy=["none", "none", "pgsl", "pgsl"], seed=[1, 2, 1, 2],
                      decoder_mse=[0.03, 0.03, 0.04, 0.05], **{"white-box_mse": [0.001, 0.002, 0.06, 0.05]},
                      decoder_ssim=[0.7, 0.7, 0.5, 0.5], **{"white-box_ssim": [0.6, 0.6, 0.2, 0.3]})
    by_mse, by_ssim = strongest_attack_names(ok, "mse"), strongest_attack_names(ok, "ssim")
    assert by_mse[("mnist", "none", 5)] == "white-box" and by_mse[("mnist", "pgsl", 5)] == "decoder"
    assert set(by_ssim) == {"decoder"}


def test_matched_utility_claims_name_their_metric(tmp_path):
    spec_path = tmp_path / "tiny.toml"
    spec_path.write_text(SPEC.replace("clients = [2, 3]", "clients = [3]"))
    spec = load_spec(spec_path)
    # laplace and pgsl are both matched; laplace is the more private by SSIM, pgsl by PSNR
    runs = _scored_runs(
        strategy=["splitfed", "laplace"], seed=[1, 1], clients=[3, 3], final_test_accuracy=[0.95, 0.945],
        best_attack_ssim=[0.70, 0.30], best_attack_psnr=[30.0, 32.0], best_attack_mse=[0.001, 0.0008],
        decoder_ssim=[0.70, 0.30], decoder_psnr=[30.0, 32.0], decoder_mse=[0.001, 0.0008],
    )
    (tmp_path / "tiny").mkdir()
    runs.to_csv(tmp_path / "tiny" / "runs.csv", index=False)
    report = write_report(spec, tmp_path / "tiny")
    claim = next(line for line in report.splitlines() if line.startswith("- mnist, 3 clients"))
    assert "by SSIM, **laplace** (0.300 against 0.700 undefended)" in claim
    assert "by PSNR, **laplace** (32.00 dB against 30.00 dB undefended: no more private than no defense)" in claim


class _Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("cannot be written")


def test_a_write_that_fails_midway_keeps_the_previous_runs_csv(tmp_path):
    path = tmp_path / "runs.csv"
    columns = ("seed", "status", "value", "wall_seconds", "error")
    runs = pd.DataFrame({"seed": range(1000), "status": "ok", "value": 0.5, "wall_seconds": 1.0, "error": ""})
    runs = cells.run_cell(runs, {"seed": 5}, lambda: {"value": 1 / 0}, path, columns)  # cell 5 failed: retried
    before = path.read_bytes()
    # the retried cell's row cannot be written: the rewrite fails after the other rows are out
    with pytest.raises(RuntimeError, match="cannot be written"):
        cells.run_cell(runs, {"seed": 5}, lambda: {"value": _Unprintable()}, path, columns)
    assert path.read_bytes() == before  # a plain to_csv(path) leaves the file without cell 5 (checked)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs.csv"]  # no temporary file left behind
    kept = pd.read_csv(path)
    assert len(kept) == 1000 and kept.set_index("seed").status[5] == "failed"


VARIANTS = """
[variants."laplace-b2"]
preset = "laplace"
laplace-scale = 2.0

[variants.splitfed-cut1]
preset = "splitfed"
cut-layer = 1
"""


def _frontier_spec(tmp_path: Path) -> Path:
    spec = tmp_path / "tiny.toml"
    spec.write_text(SPEC.replace('strategies = ["splitfed", "laplace"]',
                                 'strategies = ["splitfed", "laplace", "laplace-b2", "splitfed-cut1"]')
                    .replace("clients = [2, 3]", "clients = [3]").replace("seeds = [1]", "seeds = [1, 2]") + VARIANTS)
    return spec


def test_variants_are_presets_with_overrides(tmp_path):
    spec = load_spec(_frontier_spec(tmp_path))
    strong = spec.cell_config("mnist", "laplace-b2", 1, 3)
    assert strong["defense"] == "laplace" and strong["laplace-scale"] == 2.0 and strong["adversary"] == 2
    assert spec.cell_config("mnist", "laplace", 1, 3)["laplace-scale"] == 0.5  # the preset itself is unchanged
    assert spec.cell_config("mnist", "splitfed-cut1", 1, 3)["cut-layer"] == 1
    assert [spec.family(s) for s in spec.strategies] == ["splitfed", "laplace", "laplace", "splitfed"]
    text = _frontier_spec(tmp_path).read_text()
    for bad, message in (
        (text.replace('preset = "laplace"', 'preset = "nothing"'), "strategy 'laplace-b2' has no preset"),
        (text.replace('preset = "laplace"\n', ""), "'laplace-b2' needs a 'preset'"),
        (text.replace('"laplace-b2", ', ""), r"variant\(s\) \['laplace-b2'\] are not listed"),
        (text.replace("cut-layer = 1", "cut-layer = 9"), "splitfed-cut1.*cut-layer"),
    ):
        (tmp_path / "bad.toml").write_text(bad)
        with pytest.raises(ConfigError, match=message):
            load_spec(tmp_path / "bad.toml")


def test_pareto_front_keeps_only_undominated_settings():
    utility = [0.95, 0.94, 0.90, 0.93, 0.80]
    leakage = [30.0, 20.0, 15.0, 25.0, 16.0]  # PSNR: lower is more private
    # 0.93/25 is dominated by 0.94/20; 0.80/16 by 0.90/15
    assert pareto_front(utility, leakage) == [True, True, True, False, False]
    assert pareto_front([0.9, 0.9], [20.0, 20.0]) == [True, True]  # ties dominate neither


def test_the_frontier_section_names_the_most_private_setting_per_utility_level(tmp_path):
    spec = load_spec(_frontier_spec(tmp_path))
    runs = _scored_runs(
        strategy=["splitfed", "laplace", "laplace-b2", "splitfed-cut1"] * 2, seed=[1] * 4 + [2] * 4, clients=[3] * 8,
        final_test_accuracy=[0.95, 0.945, 0.90, 0.95, 0.95, 0.945, 0.88, 0.94],
        best_attack_psnr=[30.0, 22.0, 14.0, 29.0, 30.0, 22.0, 13.0, 29.0],
        best_attack_ssim=[0.70, 0.50, 0.20, 0.72, 0.70, 0.50, 0.20, 0.72],
        best_attack_mse=[0.001] * 8, decoder_psnr=[30.0, 22.0, 14.0, 29.0] * 2,
        decoder_ssim=[0.70, 0.50, 0.20, 0.72] * 2, decoder_mse=[0.001] * 8,
    )
    (tmp_path / "tiny").mkdir()
    runs.to_csv(tmp_path / "tiny" / "runs.csv", index=False)
    report = write_report(spec, tmp_path / "tiny")
    assert "## Privacy-utility frontier" in report
    assert "- utility within 1 point: most private by PSNR **laplace** (22.00 dB" in report
    assert "- utility within 10 points: most private by PSNR **laplace-b2** (13.50 dB" in report
    assert "below 15 dB PSNR: best utility **laplace-b2** (13.50 dB), at a cost of 6.00 points." in report
    assert "| splitfed-cut1 | splitfed | 94.50 ± 0.71 | 29.00 ± 0.00 |" in report
    # across families: splitfed (95.0 / 30 dB), laplace (94.5 / 22) and laplace-b2 (89.0 / 13.5) are
    # undominated; splitfed-cut1 (94.5 / 29) is dominated by laplace. By SSIM the same three.
    assert ("- Pareto front of all families together, most useful first: by PSNR splitfed (splitfed), laplace (laplace), "
            "laplace-b2 (laplace); by SSIM splitfed (splitfed), laplace (laplace), laplace-b2 (laplace).") in report
    assert "| splitfed-cut1 | splitfed | 94.50 ± 0.71 | 29.00 ± 0.00 | 0.720 ± 0.000 | True | False | False | 2 |" in report
    assert (tmp_path / "tiny" / "mnist_3_frontier.png").stat().st_size > 1000
    # the matched-utility reference is the plain preset, not a variant without a defense
    assert "utility within 1 point of `splitfed`" in report


def test_a_single_run_is_reported_without_a_spread(tmp_path):
    assert mean_and_spread(94.5, 0.707, 2) == "94.50 ± 0.71"
    assert mean_and_spread(29.0, float("nan"), 1) == "29.00"  # one run: no spread, not "± 0.00"
    assert mean_and_spread(0.5, float("nan"), 1, digits=3) == "0.500"
    assert mean_and_spread(float("nan"), float("nan"), 0) == ""
    spec = load_spec(_frontier_spec(tmp_path))
    runs = _scored_runs(
        strategy=["splitfed", "laplace", "laplace-b2", "splitfed-cut1"], seed=[1] * 4, clients=[3] * 4,
        final_test_accuracy=[0.95, 0.945, 0.90, 0.95], best_attack_psnr=[30.0, 22.0, 14.0, 29.0],
        best_attack_ssim=[0.70, 0.50, 0.20, 0.72], best_attack_mse=[0.001] * 4,
        decoder_psnr=[30.0, 22.0, 14.0, 29.0], decoder_ssim=[0.70, 0.50, 0.20, 0.72], decoder_mse=[0.001] * 4,
    )
    (tmp_path / "tiny").mkdir()
    runs.to_csv(tmp_path / "tiny" / "runs.csv", index=False)
    report = write_report(spec, tmp_path / "tiny")
    assert "| splitfed-cut1 | splitfed | 95.00 | 29.00 | 0.720 | True | True | False | 1 |" in report
    assert "| mnist | 3 | laplace | 94.5 |  | 0.5 | True |" in report  # matched-utility table: no utility_std
    assert "± 0.00" not in report


def test_the_report_survives_settings_whose_attacks_all_failed(tmp_path):
    spec_path = _frontier_spec(tmp_path)
    spec_path.write_text(spec_path.read_text().replace("clients = [3]", "clients = [2, 3]"))
    spec = load_spec(spec_path)
    nan = float("nan")
    strategies = ["splitfed", "laplace", "laplace-b2", "splitfed-cut1"]
    runs = _scored_runs(  # at 2 clients no cell has an attack score (e.g. every attack failed)
        strategy=strategies * 2, seed=[1] * 8, clients=[2] * 4 + [3] * 4,
        final_test_accuracy=[0.95, 0.945, 0.90, 0.95] * 2,
        best_attack_psnr=[nan] * 4 + [30.0, 22.0, 14.0, 29.0], best_attack_ssim=[nan] * 4 + [0.7, 0.5, 0.2, 0.72],
        best_attack_mse=[nan] * 4 + [0.001] * 4, decoder_psnr=[nan] * 4 + [30.0, 22.0, 14.0, 29.0],
        decoder_ssim=[nan] * 4 + [0.7, 0.5, 0.2, 0.72], decoder_mse=[nan] * 4 + [0.001] * 4,
    )
    (tmp_path / "tiny").mkdir()
    runs.to_csv(tmp_path / "tiny" / "runs.csv", index=False)
    report = write_report(spec, tmp_path / "tiny")  # raised on idxmin over all-NaN scores before
    assert "- utility within 1 point: no setting with attack scores." in report
    assert "by SSIM, no matched defense has an attack score" in report
    assert "- utility within 1 point: most private by PSNR **laplace** (22.00 dB" in report
