"""Experiment tracking (run-config ``tracking``): each round's ``metrics.csv`` row as scalars
and the resolved run config, for TensorBoard.

``tracking = "tensorboard"`` writes event files to ``<run dir>/tensorboard/`` through
``torch.utils.tensorboard.SummaryWriter``:

* one scalar per numeric ``metrics.csv`` column and round (step = round), tagged by
  :func:`scalar_tag` (``test_accuracy`` -> ``test/accuracy``, ``bytes_up_per_client`` ->
  ``run/bytes_up_per_client``); empty cells (e.g. PGSL's streams without PGSL) are left out;
* the config (what ``config.json`` holds) as text (tag ``config``, JSON) and as hparams,
  so TensorBoard's HParams tab lists the run with its final test metrics and whether it
  finished or failed.

``tracking = "none"`` writes nothing. A resumed run appends to the same folder; the
writer's ``purge_step`` makes TensorBoard drop what the interrupted round had written.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

#: Sub-folder of the run folder that holds the TensorBoard event files.
TENSORBOARD_DIR = "tensorboard"
#: Text tag of the run config.
CONFIG_TAG = "config"
#: Scalars listed as metrics in TensorBoard's HParams tab.
HPARAM_METRICS = ("test/accuracy", "test/balanced_accuracy", "test/auroc", "test/loss")
_SECTIONS = ("test_", "train_", "local_")


def scalar_tag(column: str) -> str:
    """The TensorBoard tag of a ``metrics.csv`` column: ``test_``/``train_``/``local_`` become a
    section (``test/accuracy``); timings, traffic, counts and epsilon go under ``run/``."""
    for prefix in _SECTIONS:
        if column.startswith(prefix) and not column.endswith("_seconds"):
            return f"{prefix[:-1]}/{column[len(prefix):]}"
    return f"run/{column}"


def round_scalars(row: Mapping[str, Any]) -> dict[str, float]:
    """The numeric cells of a ``metrics.csv`` row by tag (``round`` is the step, not a scalar)."""
    return {
        scalar_tag(column): float(value)
        for column, value in row.items()
        if column != "round" and isinstance(value, int | float) and not isinstance(value, bool)
        and math.isfinite(value)
    }


class Tracker:
    """Tracks nothing (``tracking = "none"``); the interface of every tracker. A context manager
    that closes the tracker on exit, also when the run fails."""

    def log_config(self, config: Mapping[str, Any]) -> None:
        """Record the resolved run config."""

    def log_round(self, row: Mapping[str, Any]) -> None:
        """Record one ``metrics.csv`` row (step = ``row["round"]``)."""

    def close(self, failed: bool = False) -> None:
        """Flush and release the tracker's files; ``failed``: the run ended with an error."""

    def __enter__(self) -> Tracker:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close(failed=error is not None)


class TensorBoardTracker(Tracker):
    """Writes event files to ``<run dir>/tensorboard/``."""

    def __init__(self, run_dir: Path, first_round: int = 1) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.log_dir = run_dir / TENSORBOARD_DIR
        # A resumed run: TensorBoard discards events at steps >= first_round from earlier files.
        self.writer = SummaryWriter(str(self.log_dir), purge_step=first_round if first_round > 1 else None)
        self._session_open = False

    def log_config(self, config: Mapping[str, Any]) -> None:
        from torch.utils.tensorboard.summary import hparams

        text = json.dumps(dict(config), indent=2, sort_keys=True)
        self.writer.add_text(CONFIG_TAG, f"```json\n{text}\n```")
        values = {k: v if isinstance(v, int | float | str) and not isinstance(v, bool) else json.dumps(v)
                  for k, v in config.items()}
        experiment, session_start, _ = hparams(values, dict.fromkeys(HPARAM_METRICS, 0.0))
        self.writer.file_writer.add_summary(experiment)
        self.writer.file_writer.add_summary(session_start)
        self._session_open = True
        self.writer.flush()

    def log_round(self, row: Mapping[str, Any]) -> None:
        step = int(row["round"])
        for tag, value in round_scalars(row).items():
            self.writer.add_scalar(tag, value, global_step=step)
        self.writer.flush()  # readable while the run goes on

    def close(self, failed: bool = False) -> None:
        if self._session_open:  # the HParams tab shows whether the run finished
            self.writer.file_writer.add_summary(_session_end(failed))
            self._session_open = False
        self.writer.close()


def _session_end(failed: bool) -> Any:
    """The hparams plugin's session-end summary (``tensorboard.plugins.hparams.summary`` needs
    TensorFlow; this is what ``torch.utils.tensorboard.summary.hparams`` builds, with a status)."""
    from tensorboard.compat.proto.summary_pb2 import Summary, SummaryMetadata
    from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2

    status = api_pb2.STATUS_FAILURE if failed else api_pb2.STATUS_SUCCESS
    content = plugin_data_pb2.HParamsPluginData(
        session_end_info=plugin_data_pb2.SessionEndInfo(status=status, end_time_secs=time.time()),
        version=metadata.PLUGIN_DATA_VERSION,
    )
    plugin = SummaryMetadata.PluginData(plugin_name=metadata.PLUGIN_NAME, content=content.SerializeToString())
    return Summary(value=[Summary.Value(tag=metadata.SESSION_END_INFO_TAG, metadata=SummaryMetadata(plugin_data=plugin))])


def open_tracker(tracking: str, run_dir: Path, first_round: int = 1) -> Tracker:
    """The tracker run-config ``tracking`` names (validated by :class:`pgsl_flower.config.RunConfig`)."""
    if tracking == "tensorboard":
        return TensorBoardTracker(run_dir, first_round)
    if tracking == "none":
        return Tracker()
    raise ValueError(f"run-config 'tracking' = {tracking!r}: no such tracker")
