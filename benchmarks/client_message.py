"""CPU per client training message: the client rebuilt from ``context.state`` vs kept live.

One client (MNIST, partition 0 of 10, batch 64, one torch thread, no Ray) handles
``train.step`` messages the way the ClientApp does: apply the server's dL/dh of the
batch it sent last, send the next batch, save its state. ``rebuild`` builds the
client from ``context.state`` for every message (and recomputes the sent batch's
forward pass); ``live`` reuses the kept client and its autograd graph
(:func:`pgsl_flower.client_app.live_client`), as an actor does when it handled the
node's previous message. Process CPU time, after a warm-up.

    python benchmarks/client_message.py              # both, alternating, 2 pairs
"""

from __future__ import annotations

import argparse
import sys
import time

import torch
from flwr.app import Context, RecordDict

from pgsl_flower import client_app, protocol
from pgsl_flower.config import RunConfig


def cpu_per_message(cfg: RunConfig, live: bool, messages: int, node: int) -> float:
    """Seconds of process CPU per message (after as many warm-up messages)."""
    context = Context(run_id=1, node_id=node, node_config={"partition-id": 0, "num-partitions": 10},
                      state=RecordDict(), run_config={})
    client = client_app.SplitClient(cfg, context)
    shape = (cfg.batch_size, *client.smashed_shape)
    client.forward_next(1)
    client.save()
    client_app.keep_live(client)
    rate = 0.0
    for _ in range(2):  # warm-up, then measured
        start = time.process_time()
        for _ in range(messages):
            content = RecordDict(protocol.encode_gradients([torch.randn(shape) * 1e-3]))
            client = client_app.live_client(cfg, context) if live else client_app.SplitClient(cfg, context)
            client.apply_gradients(content)
            client.drop_pending()
            client.forward_next(1)
            client.save()
            client_app.keep_live(client)
        rate = (time.process_time() - start) / messages
    return rate


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=40)
    parser.add_argument("--pairs", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    cfg = RunConfig(samples_per_client=1000, local_eval_samples=0, bn_recalibration="off")
    for pair in range(args.pairs):
        for node, live in ((2 * pair, False), (2 * pair + 1, True)):
            ms = 1000 * cpu_per_message(cfg, live, args.messages, node)
            print(f"{'live' if live else 'rebuild':8s} {ms:6.1f} ms CPU per message", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
