"""A ServerApp of your own that runs pgsl-flower's SplitFed schedule and uses its result."""

from __future__ import annotations

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from pgsl_flower import SplitFed, SplitResult

#: Run-config keys the ServerApp and the ClientApp share (run.py gives the same to the
#: ClientApp): small real MNIST, about a minute on two cores.
RUN_CONFIG = {
    "dataset": "mnist",
    "samples-per-client": 128,
    "batch-size": 32,
    "test-samples": 256,
    "local-eval-samples": 32,
    "bn-calibration-samples": 64,
    "output-dir": "outputs/custom_server_app",
}
NUM_ROUNDS = 2

#: Every result ``main`` produced: the simulation runs the ServerApp in this process.
results: list[SplitResult] = []

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Train with SplitFed, then report each round's test accuracy and the final weights."""
    strategy = SplitFed(RUN_CONFIG)  # under `flwr run`: SplitFed(context.run_config), as the ClientApp reads it
    result = strategy.start(grid=grid, num_rounds=NUM_ROUNDS)
    for round_num, metrics in result.metrics.items():
        print(f"round {round_num}: test accuracy {metrics['test_accuracy']:.4f}, "
              f"train loss {metrics['train_loss']:.4f}")
    print(f"final client part: {len(result.arrays)} arrays, server part: {len(result.server_arrays)} arrays")
    print(f"outputs in {result.run_dir}")
    results.append(result)
