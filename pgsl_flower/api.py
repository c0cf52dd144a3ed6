"""The schedules as Flower-style strategies, for use in a ServerApp of your own.

Mirrors ``flwr.serverapp.strategy.FedAvg``: build a strategy with its settings,
then ``start`` it on the Grid the ServerApp's ``main`` receives::

    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        result = SplitFed(context.run_config).start(grid=grid, num_rounds=5)
        print(result.metrics[5]["test_accuracy"])

``start`` runs exactly what the built-in ServerApp runs
(:func:`pgsl_flower.server_app.run_federation`). The ClientApp must be
pgsl-flower's (:mod:`pgsl_flower.client_app`) with the same run config: under
``flwr run`` both read ``context.run_config`` (so keyword settings that the clients
use too, such as the dataset, batch size or defense, belong in the run config, not
in the constructor); in ``run_simulation`` pass ``build_client_app(strategy.config)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from flwr.app import ArrayRecord
from flwr.serverapp import Grid

from pgsl_flower.config import ConfigError, RunConfig, parse_run_config
from pgsl_flower.result import SplitResult


class SplitStrategy:
    """A split-learning schedule and its run configuration (use :class:`SplitFed` or
    :class:`SequentialSplit`).

    ``config`` is a :class:`RunConfig` or a run-config mapping with hyphenated keys
    (e.g. ``context.run_config``); ``settings`` are run-config keys as Python names
    (``samples_per_client=200``, ``defense="pgsl"``, ``pgsl_mu=0.55``) and override it.
    Missing keys take their defaults; every value is validated here. The class sets
    run-config 'schedule'.
    """

    schedule: ClassVar[str]

    def __init__(self, config: RunConfig | Mapping[str, Any] | None = None, **settings: Any) -> None:
        if "schedule" in settings:
            raise ConfigError(
                f"{type(self).__name__} runs schedule {self.schedule!r}; pick the class instead of "
                "passing 'schedule' (SplitFed: 'splitfed', SequentialSplit: 'sequential')"
            )
        values = dict(config.as_run_config() if isinstance(config, RunConfig) else config or {})
        values.update({key.replace("_", "-"): value for key, value in settings.items()})
        values["schedule"] = self.schedule
        #: The validated run configuration the server (and the ClientApp) run with.
        self.config: RunConfig = parse_run_config(values)

    def __repr__(self) -> str:
        cfg = self.config
        return f"{type(self).__name__}(dataset={cfg.dataset!r}, defense={cfg.defense!r}, num_rounds={cfg.num_rounds})"

    def start(
        self,
        grid: Grid,
        initial_arrays: ArrayRecord | None = None,
        num_rounds: int | None = None,
        timeout: float | None = None,
        *,
        initial_server_arrays: ArrayRecord | None = None,
        run_dir: str | Path | None = None,
    ) -> SplitResult:
        """Run the federation on ``grid``: train, evaluate and write the outputs of every round.

        Parameters
        ----------
        grid : Grid
            The Grid the ServerApp's ``main`` received.
        initial_arrays : ArrayRecord, optional
            The client part's starting state dict (``ClientNet.state_dict()``: conv1..conv<cut-layer>
            weights and BatchNorm buffers), sent to the clients at round 1. Default: freshly
            initialised from run-config 'seed'. Keys, dtypes and shapes are checked before
            any node is contacted; a mismatch raises ``ValueError`` naming it.
        num_rounds : int, optional
            Rounds to run (default: run-config 'num-rounds').
        timeout : float, optional
            Seconds to wait for one client reply before dropping that client
            (default: run-config 'reply-timeout').
        initial_server_arrays : ArrayRecord, optional
            The server part's starting state dict (checked the same way).
        run_dir : str or Path, optional
            Output folder (default: ``<output-dir>/<timestamp>-<run id>``, or the folder of
            the run that run-config 'resume-from' continues).

        Returns
        -------
        SplitResult
            Per-round metrics, the final client and server arrays, the run folder, the summary.
        """
        from pgsl_flower.server_app import new_run_dir, resume_run_dir, run_federation  # torch, data: loaded on use

        changes: dict[str, Any] = {}
        if num_rounds is not None:
            changes["num_rounds"] = num_rounds
        if timeout is not None:
            changes["reply_timeout"] = float(timeout)
        cfg = self.config.replace(**changes)
        target = Path(run_dir).resolve() if run_dir else resume_run_dir(cfg) or new_run_dir(cfg, grid.run.run_id)
        return run_federation(grid, cfg, target, initial_arrays, initial_server_arrays)


class SplitFed(SplitStrategy):
    """SplitFed (SFLV2): clients train in parallel against one shared server model; the client
    parts are FedAvg'ed at each round's end (run-config schedule 'splitfed')."""

    schedule = "splitfed"


class SequentialSplit(SplitStrategy):
    """Vanilla split learning: clients take turns in a seeded order, the client part relayed
    from one to the next (run-config schedule 'sequential')."""

    schedule = "sequential"
