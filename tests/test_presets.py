from pathlib import Path

import pytest
from flwr.common.config import parse_config_args

from pgsl_flower.config import parse_run_config

PRESETS = sorted((Path(__file__).resolve().parents[1] / "strategies").glob("*.toml"))


def test_there_are_presets():
    assert {p.stem for p in PRESETS} >= {"splitfed", "sequential", "pgsl"}


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.stem)
def test_preset_is_a_valid_run_config(preset):
    cfg = parse_run_config(parse_config_args([str(preset)]))
    assert preset.stem in (cfg.schedule, cfg.defense)
