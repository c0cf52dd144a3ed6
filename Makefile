# Two commands do all set-up: `make run` (the main job) and `make test` (the tests).
# Each creates .venv when missing and installs the pinned dependencies into it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
NUM_CLIENTS ?= 10
PRESET ?= strategies/pgsl.toml
RUN_CONFIG ?=
export FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION := 1
export HF_DATASETS_OFFLINE := 1
export HF_HUB_OFFLINE := 1

.PHONY: run test bench bench-scale install clean

$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c requirements.lock -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/python -m pgsl_flower --num-clients $(NUM_CLIENTS) $(if $(PRESET),-c $(PRESET)) $(if $(RUN_CONFIG),--run-config "$(RUN_CONFIG)")

test: $(STAMP)
	$(BIN)/python -m pytest -v --durations=15

bench: $(STAMP)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c requirements.lock -e ".[bench]"
	$(BIN)/python benchmarks/throughput.py
	$(BIN)/python benchmarks/proximal.py

bench-scale: $(STAMP)
	$(BIN)/python benchmarks/scale.py --baseline "max-in-flight=0" --rounds 3 --batches-per-round 1

clean:
	rm -rf $(VENV) .pytest_cache
