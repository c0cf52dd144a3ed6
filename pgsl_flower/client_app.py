"""ClientApp: the hospital side of split learning.

The client owns its raw images and the pre-cut layers (conv1-conv2). Per
``train.step`` message it (1) applies the server's dL/dh to the batch it sent
last, then (2) sends the smashed data of its next batch. Both happen in one
message so a training step costs one exchange, not two.

Only ``context.state`` survives between messages, so the client's model,
optimizer and batch counter live there. The autograd graph of the previous
batch does not survive either: step (1) recomputes the client forward pass on
the same batch with the same weights (BN batch statistics are identical; the
running statistics are restored so they are updated once per batch), which
gives exactly the h the server differentiated.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.clientapp.typing import Mod

from pgsl_flower import protocol
from pgsl_flower.config import RunConfig, parse_run_config
from pgsl_flower.local_data import LocalData, batch_indices, client_order_seed, local_data
from pgsl_flower.model import CONV_CHANNELS, ClientNet, decayed_step, make_optimizer

_MODEL_KEY = "client-model"
_OPTIM_KEY = "client-optimizer"
_PROGRESS_KEY = "client-progress"


def _partition(context: Context) -> tuple[int, int]:
    node = context.node_config
    try:
        return int(node["partition-id"]), int(node["num-partitions"])
    except KeyError as err:
        raise ValueError(
            f"node-config key {err} missing: each SuperNode needs 'partition-id' and "
            "'num-partitions' (simulation sets them)"
        ) from None


@contextmanager
def _frozen_running_stats(model: torch.nn.Module) -> Iterator[None]:
    """Forward and backward in train mode, then put BN running statistics back.

    Restored only on exit: BN's backward reads the buffers it saw in the forward.
    """
    saved = {name: buf.clone() for name, buf in model.named_buffers()}
    try:
        yield
    finally:
        with torch.no_grad():
            for name, buf in model.named_buffers():
                buf.copy_(saved[name])


class SplitClient:
    """The client part and its optimizer, rebuilt from and saved to ``context.state``."""

    def __init__(self, cfg: RunConfig, context: Context) -> None:
        self.cfg = cfg
        self.context = context
        self.partition_id, num_partitions = _partition(context)
        self.data: LocalData = local_data(cfg, self.partition_id, num_partitions)
        channels = self.data.train_images.shape[1]
        self.model = ClientNet(channels)
        self.optimizer = make_optimizer(self.model, cfg.lr, cfg.weight_decay)
        state = context.state
        if _MODEL_KEY in state:
            self.model.load_state_dict(state[_MODEL_KEY].to_torch_state_dict())
        if _OPTIM_KEY in state:
            _load_adam_state(self.optimizer, state[_OPTIM_KEY])
        progress = state[_PROGRESS_KEY] if _PROGRESS_KEY in state else ConfigRecord()
        self.counter = int(progress.get("batch-counter", 0))
        self.pending = int(progress.get("pending", -1))  # counter of batch awaiting dL/dh

    def _indices(self, counter: int) -> torch.Tensor:
        n = self.data.train_labels.shape[0]
        return batch_indices(n, self.cfg.batch_size, counter, client_order_seed(self.cfg, self.partition_id))

    def load_weights(self, record: ArrayRecord) -> None:
        reference = self.model.state_dict()
        weights = protocol.decode_state(
            record, reference, field=protocol.CLIENT_WEIGHTS, max_bytes=self.cfg.max_payload_bytes
        )
        self.model.load_state_dict(weights)

    def apply_gradient(self, record: ArrayRecord) -> None:
        """Backpropagate the server's dL/dh through the pre-cut layers and step."""
        if self.pending < 0:
            raise protocol.PayloadError("field 'grad.h': no batch is awaiting a gradient")
        inputs = self.data.inputs(self._indices(self.pending))
        self.model.train()
        with _frozen_running_stats(self.model):
            smashed = self.model(inputs)
            grad = protocol.array_to_tensor(
                protocol.require_array(record, "h", protocol.GRAD),
                field=f"{protocol.GRAD}.h",
                dtype=torch.float32,
                shape=tuple(smashed.shape),
                max_bytes=self.cfg.max_payload_bytes,
            )
            self.optimizer.zero_grad(set_to_none=True)
            smashed.backward(grad)
        decayed_step(self.optimizer, self.cfg.lr, self.cfg.lr_decay, self.pending)
        self.pending = -1

    def forward_next(self) -> ArrayRecord:
        """Smashed data and labels of the next batch (train mode, no graph kept)."""
        indices = self._indices(self.counter)
        self.model.train()
        with torch.no_grad():
            smashed = self.model(self.data.inputs(indices))
        labels = self.data.labels(indices)
        self.pending = self.counter
        self.counter += 1
        return protocol.encode_batch(smashed, labels)

    @property
    def holdout_count(self) -> int:
        """Held-out samples evaluated per round ('local-eval-samples', capped by the split)."""
        return min(self.cfg.local_eval_samples, self.data.holdout_labels.shape[0])

    def holdout_batch(self) -> ArrayRecord:
        """Smashed data (eval mode) of the held-out split, capped by 'local-eval-samples'."""
        indices = torch.arange(self.holdout_count)
        self.model.eval()
        with torch.no_grad():
            smashed = self.model(self.data.inputs(indices, "holdout"))
        return protocol.encode_batch(smashed, self.data.labels(indices, "holdout"))

    def save(self) -> None:
        state = self.context.state
        state[_MODEL_KEY] = ArrayRecord(self.model.state_dict())
        state[_OPTIM_KEY] = _adam_state_record(self.optimizer)
        state[_PROGRESS_KEY] = ConfigRecord({"batch-counter": self.counter, "pending": self.pending})


def _adam_state_record(optimizer: torch.optim.Optimizer) -> ArrayRecord:
    flat = {
        f"{index}.{name}": value if torch.is_tensor(value) else torch.tensor(value)
        for index, per_param in optimizer.state_dict()["state"].items()
        for name, value in per_param.items()
    }
    return ArrayRecord(flat)


def _load_adam_state(optimizer: torch.optim.Optimizer, record: ArrayRecord) -> None:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, tensor in record.to_torch_state_dict().items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = tensor
    full = optimizer.state_dict()
    full["state"] = state
    optimizer.load_state_dict(full)


def _config(context: Context, override: RunConfig | None) -> RunConfig:
    return override if override is not None else parse_run_config(context.run_config)


def build_client_app(override: RunConfig | None = None, mods: list[Mod] | None = None) -> ClientApp:
    """The ClientApp; ``override`` replaces ``context.run_config`` (programmatic runs).

    ``mods`` are Flower client mods wrapped around every handler.
    """
    client_app = ClientApp(mods=mods)

    def handler(body: Callable[[SplitClient, Message], RecordDict]) -> Callable:
        def run(message: Message, context: Context) -> Message:
            client = SplitClient(_config(context, override), context)
            reply = body(client, message)
            client.save()
            return Message(reply, reply_to=message)

        return run

    @client_app.query("info")
    @handler
    def info(client: SplitClient, message: Message) -> RecordDict:
        record = ConfigRecord(
            {
                "num-train": int(client.data.train_labels.shape[0]),
                "num-holdout": int(client.data.holdout_labels.shape[0]),
                "num-classes": client.data.num_classes,
                "partition-id": client.partition_id,
            }
        )
        return RecordDict({protocol.INFO: record})

    @client_app.train("step")
    @handler
    def step(client: SplitClient, message: Message) -> RecordDict:
        content = message.content
        if protocol.CLIENT_WEIGHTS in content:
            client.load_weights(content[protocol.CLIENT_WEIGHTS])
        if protocol.GRAD in content:
            client.apply_gradient(content[protocol.GRAD])
        instructions = protocol.require_record(content, protocol.INSTRUCTIONS, ConfigRecord)
        reply = RecordDict()
        if instructions.get("forward", False):
            reply[protocol.BATCH] = client.forward_next()
        if instructions.get("send-weights", False):
            reply[protocol.CLIENT_WEIGHTS] = ArrayRecord(client.model.state_dict())
            reply[protocol.INFO] = ConfigRecord(
                {"num-train": int(client.data.train_labels.shape[0])}
            )
        return reply

    @client_app.query("attack")
    @handler
    def attack(client: SplitClient, message: Message) -> RecordDict:
        """Only the configured adversarial client answers: reconstruct intercepted smashed data."""
        from pgsl_flower.attacks.interception import reconstruct_intercepted

        if client.partition_id != client.cfg.adversary:
            raise PermissionError(
                f"partition {client.partition_id} is not the adversarial client "
                f"(run-config 'adversary' = {client.cfg.adversary}); honest clients refuse query.attack"
            )
        content = message.content
        client.load_weights(protocol.require_record(content, protocol.CLIENT_WEIGHTS, ArrayRecord))
        smashed = protocol.array_to_tensor(
            protocol.require_array(
                protocol.require_record(content, protocol.INTERCEPTED, ArrayRecord), "h", protocol.INTERCEPTED
            ),
            field=f"{protocol.INTERCEPTED}.h",
            dtype=torch.float32,
            shape=(None, CONV_CHANNELS, *(side // 2 for side in client.data.train_images.shape[-2:])),
            max_bytes=client.cfg.max_payload_bytes,
        )
        reconstructions = reconstruct_intercepted(client.cfg, client.data, client.model, smashed)
        return RecordDict({protocol.RECONSTRUCTIONS: ArrayRecord(
            {name: protocol.tensor_to_array(images) for name, images in reconstructions.items()}
        )})

    @client_app.evaluate()
    @handler
    def evaluate(client: SplitClient, message: Message) -> RecordDict:
        content = message.content
        if protocol.CLIENT_WEIGHTS in content:
            client.load_weights(content[protocol.CLIENT_WEIGHTS])
        if not client.holdout_count:
            return RecordDict()
        return RecordDict({protocol.BATCH: client.holdout_batch()})

    return client_app


app = build_client_app()
