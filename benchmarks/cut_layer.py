"""What the cut layer costs the client: compute, time and bytes against ``cut-layer``.

For each k (the client holds conv1..convk of the paper's seven convs) on one image size:
- client-part multiply-accumulates per image (forward; counted with hooks on every
  conv / linear layer) and their share of the whole network's (a 10-class head; the
  head's MACs are a negligible part of the server's);
- the client part's weights: parameters and float32 bytes, what a client uploads to
  FedAvg each round on top of its smashed data;
- the smashed data per image in float32 bytes (the same 64 x H/2 x W/2 at every k);
- measured seconds of one client training step (forward + backward of the client part
  for a batch, given dL/dh), median of ``--repeats`` after a warm-up, with the torch
  threads of this process. Inputs are seeded random tensors: conv time does not depend
  on pixel values.

Privacy and accuracy against k come from the frontier sweep (``simulations/frontier.toml``,
cut 1 / 2 / 4), and so do bytes per round (runs.csv's ``bytes_up_per_client``); this prints
the cost per image and per step.

    python benchmarks/cut_layer.py                       # MNIST size (28 x 28), batch 32
    python benchmarks/cut_layer.py --image-size 64 --batch-size 16
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch
from torch import nn

from pgsl_flower.model import CUT_LAYERS, ClientNet, ServerNet, prepare_input


def forward_macs(module: nn.Module, inputs: torch.Tensor) -> int:
    """Multiply-accumulates of one forward pass of ``module`` per sample (conv and linear layers)."""
    total = 0

    def count(layer: nn.Module, _args: tuple, output: torch.Tensor) -> None:
        nonlocal total
        per_output = layer.weight[0].numel()  # in_channels / groups * kernel area, or in_features
        total += output[0].numel() * per_output

    handles = [m.register_forward_hook(count) for m in module.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    try:
        with torch.no_grad():
            module(inputs[:1])
    finally:
        for handle in handles:
            handle.remove()
    return total


def client_step_seconds(client: ClientNet, inputs: torch.Tensor, repeats: int) -> float:
    """Median seconds of the client's training step: forward, then backward of a given dL/dh."""
    grad = torch.randn_like(client(inputs)) * 1e-3
    times = []
    for i in range(repeats + 2):
        start = time.perf_counter()
        client.zero_grad(set_to_none=True)
        client(inputs).backward(grad)
        if i >= 2:  # two warm-up steps
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image-size", type=int, default=28)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--client-norm", default="batch", choices=["batch", "group"])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.image_size % 2 or args.image_size < 4:
        parser.error(f"--image-size must be even and >= 4, got {args.image_size}")

    torch.manual_seed(args.seed)
    images = torch.rand(args.batch_size, 1, args.image_size, args.image_size)
    inputs = prepare_input(images)
    print(f"image {args.image_size}x{args.image_size}, batch {args.batch_size}, {args.client_norm} norm, torch threads "
          f"{torch.get_num_threads()}, median of {args.repeats} client steps")
    print("| k | client MACs / image | share of network | client params | client weights MB | "
          "smashed KB / image | client step ms |")
    print("|---|---|---|---|---|---|---|")
    for k in CUT_LAYERS:
        client = ClientNet(1, args.client_norm, cut_layer=k).train()
        server = ServerNet(10, cut_layer=k).eval()
        smashed = client(inputs[:1]).detach()
        client_macs = forward_macs(client, inputs)
        server_macs = forward_macs(server, smashed)
        params = sum(p.numel() for p in client.parameters())
        seconds = client_step_seconds(client, inputs, args.repeats)
        print(f"| {k} | {client_macs / 1e6:.2f} M | {100 * client_macs / (client_macs + server_macs):.1f} % | "
              f"{params:,} | {params * 4 / 1e6:.3f} | {smashed.numel() * 4 / 1e3:.1f} | {seconds * 1e3:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
