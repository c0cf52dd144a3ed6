"""PGSL's three towers in two CPU lanes: the same training step, both cores busy.

Given ``h`` and the recovered ``f_v`` the three towers (Section IV-D) are independent:
the attacked tower reads ``h`` detached, the recovered tower ``f_v``, and only the
fused tower (via the fusion, eq. 8) sends a gradient back to ``h``. So instead of
running the towers one after another on every thread, the step runs two lanes side
by side, each on half the threads:

- this thread: the proximal recovery (eqs. 2-6), the fusion, the fused tower;
- a worker thread: the attacked tower, then (once ``f_v`` exists) the recovered tower.

Each tower's loss is back-propagated in its own lane (the graphs share no
parameter), then one optimizer step follows, as in the sequential step, whose
gradients are those of the sum of the three losses.

Dropout draws its masks from the global RNG, which two lanes would draw from in an
order that depends on thread timing. So the masks are drawn here, before the lanes
start, in the sequential step's order (towers in ``STREAMS`` order, each in
forward order), and the towers' dropouts apply them: the run's random stream is the
sequential step's. With one thread per lane the step is bit-identical to the
sequential step on one thread (``tests/test_pgsl_lanes.py``).

What it buys (README, Benchmarks): in the simulation, where the ClientApp actors
share the cores with the server, the PGSL round took 0.84x the time of the
sequential step's; in a process alone on the machine the lanes are 1.02-1.18x
slower. ``PGSL_TWO_LANES=0`` turns them off.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager

import torch
from torch import nn
from torch.nn import functional as F

Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

_pools: dict[int, ThreadPoolExecutor] = {}
_pools_lock = threading.Lock()


def lane_threads(total: int) -> tuple[int, int]:
    """(this thread's, the worker's) torch threads when the step has ``total``; both >= 1."""
    if total < 2:
        raise ValueError(f"two lanes need at least 2 torch threads, got {total}")
    return total // 2, total - total // 2


def worker_pool(threads: int) -> ThreadPoolExecutor:
    """One worker thread per process and thread count, its torch threads set once."""
    with _pools_lock:
        if threads not in _pools:
            _pools[threads] = ThreadPoolExecutor(
                1, thread_name_prefix=f"pgsl-lane-{threads}t", initializer=torch.set_num_threads, initargs=(threads,)
            )
        return _pools[threads]


def dropouts(module: nn.Module) -> list[nn.Dropout]:
    """The module's active dropouts in registration order (forward order for the towers)."""
    return [m for m in module.modules() if isinstance(m, nn.Dropout) and m.p > 0]


def dropout_input_shapes(tower: nn.Module, modules: Sequence[nn.Dropout], x: torch.Tensor) -> list[torch.Size]:
    """Shapes reaching each of the tower's dropouts ``modules`` for input ``x``: a no-grad forward in
    eval mode (no RNG drawn, no BatchNorm statistic updated); the tower's mode is restored."""
    shapes: list[torch.Size] = []
    hooks = [m.register_forward_pre_hook(lambda _m, args: shapes.append(args[0].shape)) for m in modules]
    was_training = tower.training
    try:
        tower.eval()
        with torch.no_grad():
            tower(x)
    finally:
        tower.train(was_training)
        for hook in hooks:
            hook.remove()
    return shapes


def draw_masks(modules: Sequence[nn.Dropout], shapes: Sequence[torch.Size], device: torch.device) -> list[torch.Tensor]:
    """Scaled masks ``bernoulli(1 - p) / (1 - p)``, drawn as the dropouts ``modules`` would draw them
    (same kernel, shape and RNG consumption), in their order."""
    return [F.dropout(torch.ones(shape, device=device), m.p, training=True) for m, shape in zip(modules, shapes)]


@contextmanager
def preset_dropout(modules: Sequence[nn.Dropout], masks: Sequence[torch.Tensor]) -> Iterator[None]:
    """The dropouts ``modules`` multiply by ``masks`` (in order) instead of drawing: ``x * mask`` is
    what dropout computes from its own draw."""
    if len(modules) != len(masks):
        raise ValueError(f"{len(masks)} masks for {len(modules)} dropouts")
    for module, mask in zip(modules, masks):
        module.forward = lambda x, mask=mask: x * mask  # type: ignore[method-assign]
    try:
        yield
    finally:
        for module in modules:
            del module.forward


class TwoLaneStep:
    """Forward and backward of the fusion and the three towers in two lanes; the caller zeroes
    the gradients before and steps the optimizer after."""

    def __init__(self, fusion: nn.Module, towers: Mapping[str, nn.Module]) -> None:
        """``towers`` in the sequential step's order (:data:`STREAMS`), which the RNG draws follow."""
        self.fusion = fusion
        self.towers = towers
        self._dropouts = {name: dropouts(tower) for name, tower in towers.items()}
        self._shapes: dict[tuple[str, torch.Size], list[torch.Size]] = {}

    def _masks(self, h: torch.Tensor) -> dict[str, list[torch.Tensor]]:
        masks = {}
        for name, modules in self._dropouts.items():
            key = (name, h.shape)  # the towers' inputs (h, f_v, the fusion's output) share h's shape
            if key not in self._shapes:
                self._shapes[key] = dropout_input_shapes(self.towers[name], modules, h.detach())
            masks[name] = draw_masks(modules, self._shapes[key], h.device)
        return masks

    def __call__(
        self, h: torch.Tensor, labels: torch.Tensor, recover: Callable[[torch.Tensor], torch.Tensor], loss: Loss
    ) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """(logits, loss) per stream; ``h`` requires grad and receives the fused stream's dL/dh."""
        previous = torch.get_num_threads()
        main_threads, worker_threads = lane_threads(previous)
        masks = self._masks(h)
        recovered_ready = threading.Event()
        shared: dict[str, torch.Tensor] = {}
        outputs: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

        def run_tower(name: str, x: torch.Tensor) -> None:
            logits = self.towers[name](x)
            value = loss(logits, labels)
            value.backward()
            outputs[name] = (logits, value)

        def worker_lane() -> None:
            run_tower("attacked", h.detach())
            recovered_ready.wait()
            if "recovered" in shared:  # else this thread failed before f_v existed
                run_tower("recovered", shared["recovered"])

        with ExitStack() as presets:
            for name, modules in self._dropouts.items():
                presets.enter_context(preset_dropout(modules, masks[name]))
            worker = worker_pool(worker_threads).submit(worker_lane)
            torch.set_num_threads(main_threads)
            try:
                f_v = recover(h.detach())
                shared["recovered"] = f_v
                recovered_ready.set()
                run_tower("fused", self.fusion(h, f_v))
            finally:
                recovered_ready.set()
                torch.set_num_threads(previous)
                worker.result()  # waits, and re-raises the worker lane's error here
        return outputs

