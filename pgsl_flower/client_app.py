"""ClientApp: the hospital side of split learning.

The client owns its raw images and the pre-cut layers (conv1..conv<cut-layer>,
default conv1-conv2). Per ``train.step`` message it (1) applies the server's dL/dh
to the batches it sent last, then (2) sends the smashed data of its next batches
(``batches-per-message``, 1 by default). Both happen in one message so a training step costs one
exchange, not two.

Only ``context.state`` survives between messages, so the client's model,
optimizer and batch counter live there. The autograd graph of the previous
batch does not survive either: step (1) recomputes the client forward pass on
the same batch (BN batch statistics are identical; BN running statistics are
updated by this recomputation only, once per batch, at the weights being
trained). With one batch per message the weights are the same too, which gives
exactly the h the server differentiated; with k batches, see
:meth:`SplitClient.apply_gradients`.

The recomputation is skipped when the same process handles the node's next
message: the process keeps its live clients (:func:`live_client`), each with the
autograd graph of the batch it sent, and reuses one only while ``context.state``
is exactly what that client saved (a token written by :meth:`SplitClient.save`).
The graph's backward is the recomputation's, so the results are the same; with
one batch per message (when the graph is kept) the BN running statistics are
updated at the forward instead, once per batch, at the same weights.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from uuid import uuid4

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.clientapp.typing import Mod

from pgsl_flower import checkpoint, protocol
from pgsl_flower.batchnorm import batchnorm_layers, input_moments
from pgsl_flower.config import RunConfig, parse_run_config
from pgsl_flower.defenses import (
    CALIBRATION_BATCH,
    DPSGD,
    HOLDOUT_BATCH,
    MinimaxPerturbation,
    batch_seed,
    make_defense,
    per_sample_gradients,
)
from pgsl_flower.local_data import (
    LocalData,
    augment_seed,
    client_batch_indices,
    dropout_seed,
    local_data,
    site_local_data,
)
from pgsl_flower.model import build_client_net, decayed_step, make_optimizer, seeded_dropout, smashed_shape

_MODEL_KEY = "client-model"
_OPTIM_KEY = "client-optimizer"
_PROGRESS_KEY = "client-progress"
_ADVERSARY_KEY = "client-simulated-adversary"  # latent-perturbation: the client's own decoder D
_ADVERSARY_OPTIM_KEY = "client-simulated-adversary-optimizer"


def _partition(context: Context) -> int:
    try:
        return int(context.node_config["partition-id"])
    except KeyError:
        raise ValueError(
            "node-config key 'partition-id' missing: each SuperNode needs a unique 'partition-id' "
            "(simulation sets it; a site passes it with --node-config)"
        ) from None


def _local_data(cfg: RunConfig, context: Context, partition_id: int) -> LocalData:
    """The site's folder (node-config 'data-dir'), else partition 'partition-id' of
    'num-partitions' of the dataset (simulation)."""
    node = context.node_config
    if node.get("data-dir"):
        depth = node.get("bit-depth")
        return site_local_data(
            cfg, str(node["data-dir"]), partition_id, None if depth in (None, "") else int(depth),
            site_name=str(node.get("site-name", "")), cache_dir=str(node.get("cache-dir") or "") or None,
        )
    if "num-partitions" not in node:
        raise ValueError(
            "node-config needs 'data-dir' (the site's image folder) or 'num-partitions' "
            "(a partition of the dataset, as in simulation)"
        )
    return local_data(cfg, partition_id, int(node["num-partitions"]))


@contextmanager
def _frozen_running_stats(model: torch.nn.Module) -> Iterator[None]:
    """Run a train-mode forward, then put BN running statistics back."""
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
        self.partition_id = _partition(context)
        self.data: LocalData = _local_data(cfg, context, self.partition_id)
        channels = self.data.train_images.shape[1]
        self.model = build_client_net(cfg, channels)
        self.defense = make_defense(cfg, channels, self.partition_id)
        self.optimizer = make_optimizer(self.model, cfg.lr, cfg.weight_decay)
        state = context.state
        if _MODEL_KEY in state:
            self.model.load_state_dict(state[_MODEL_KEY].to_torch_state_dict())
        if _OPTIM_KEY in state:
            _load_adam_state(self.optimizer, state[_OPTIM_KEY])
        if isinstance(self.defense, MinimaxPerturbation) and _ADVERSARY_KEY in state:
            self.defense.adversary.load_state_dict(state[_ADVERSARY_KEY].to_torch_state_dict())
            _load_adam_state(self.defense.optimizer, state[_ADVERSARY_OPTIM_KEY])
        progress = state[_PROGRESS_KEY] if _PROGRESS_KEY in state else ConfigRecord()
        self.counter = int(progress.get("batch-counter", 0))
        # the batches sent last and awaiting dL/dh: counters pending-first .. + pending-count - 1
        self.pending_first = int(progress.get("pending-first", 0))
        self.pending_count = int(progress.get("pending-count", 0))
        self.message = int(progress.get("message", -1))  # index of the last train.step message handled
        self.run_key = str(progress.get("run-key", ""))
        self.round = int(progress.get("round", 0))
        self.fresh = not self.run_key  # no round of this run started here yet
        # the pending batch's BN running stats were updated at its forward (its graph was kept)
        self.pending_stats_done = bool(progress.get("pending-stats-done", False))
        #: (batch counter, inputs, smashed data with its autograd graph) of the pending batch, when
        #: kept by :meth:`forward_next`; lives only in this process (see :func:`live_client`).
        self.graph: tuple[int, torch.Tensor, torch.Tensor] | None = None
        self.token = ""  # written to context.state by save(): which state this object holds

    def _indices(self, counter: int) -> torch.Tensor:
        return client_batch_indices(self.cfg, self.data, self.partition_id, counter)

    def _inputs(self, indices: torch.Tensor, counter: int) -> torch.Tensor:
        """The training batch's input, augmented (seeded by the batch counter) when configured."""
        return self.data.inputs(indices, augment_seed=augment_seed(self.cfg, self.partition_id, counter))

    def load_weights(self, record: ArrayRecord) -> None:
        reference = self.model.state_dict()
        weights = protocol.decode_state(
            record, reference, field=protocol.CLIENT_WEIGHTS, max_bytes=self.cfg.max_payload_bytes
        )
        self.model.load_state_dict(weights)
        self.graph = None  # computed at the old weights: a recomputation uses the new ones

    @property
    def keeps_graph(self) -> bool:
        """Whether :meth:`forward_next` keeps a single batch's autograd graph: not under DP-SGD
        (per-sample gradients need their own forward) nor latent perturbation (its simulated
        adversary trains on the client's step)."""
        return not isinstance(self.defense, (DPSGD, MinimaxPerturbation))

    @property
    def wire_dtype(self) -> torch.dtype:
        """How smashed data and gradients travel (run-config 'payload-dtype')."""
        return protocol.payload_dtype(self.cfg.payload_dtype)

    @property
    def smashed_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one sample's smashed data."""
        return smashed_shape(self.cfg, self.data.train_images.shape[-2:])

    def check_order(self, instructions: ConfigRecord, starts: bool) -> None:
        """Refuse a ``train.step`` message out of order: 'instructions.message' must be 0 on the
        message that carries the weights, and one more than the last one's otherwise."""
        if "message" not in instructions:
            return
        index = int(instructions["message"])  # type: ignore[arg-type]
        expected = 0 if starts else self.message + 1
        if index != expected:
            raise protocol.PayloadError(
                f"field 'instructions.message' = {index}, expected {expected}: messages arrived out of order"
            )
        self.message = index

    def apply_gradients(self, content: RecordDict) -> None:
        """Backpropagate the server's dL/dh of the oldest pending batches, one optimizer step each.

        All gradients are validated before any is applied. Batch i is recomputed at
        the *current* weights and takes the gradient the server computed on the h
        sent before any of this message's steps: with ``batches-per-message`` = k,
        dL/dh is stale by up to k - 1 client steps (exact for k = 1). With
        ``messages-in-flight`` = d > 1 the batches of the d - 1 later messages were sent
        before these steps too: stale by up to d * k - 1 client steps.
        """
        if self.pending_count < 1:
            raise protocol.PayloadError("records 'grad.*': no batch is awaiting a gradient")
        # one message in flight: every pending batch takes its gradient (decode_gradients checks the count)
        count = protocol.gradient_count(content) if self.cfg.messages_in_flight > 1 else self.pending_count
        if not 1 <= count <= self.pending_count:
            raise protocol.PayloadError(
                f"records 'grad.*': {count} gradient(s) for {self.pending_count} pending batch(es)")
        counters = range(self.pending_first, self.pending_first + count)
        indices = [self._indices(counter) for counter in counters]
        grads = protocol.decode_gradients(
            content,
            [(len(idx), *self.smashed_shape) for idx in indices],
            max_bytes=self.cfg.max_payload_bytes,
            dtype=self.wire_dtype,
        )
        self.model.train()
        with self._trainable() as (model, optimizer):
            for counter, idx, grad in zip(counters, indices, grads, strict=True):
                kept = self.graph if self.graph is not None and self.graph[0] == counter else None
                # running stats already updated at the forward: the recomputation leaves them as they are
                frozen = kept is None and self.pending_stats_done
                with _frozen_running_stats(model) if frozen else nullcontext():
                    if kept is None:
                        inputs = self._inputs(idx, counter)
                        with seeded_dropout(model, dropout_seed(self.cfg, self.partition_id, counter)):  # the sent masks
                            smashed = model(inputs)  # updates BN running stats, at the current weights
                    else:
                        _, inputs, smashed = kept  # the sent batch's own graph, at these weights
                    optimizer.zero_grad(set_to_none=True)
                    extra = self.defense.local_loss(inputs, smashed)  # e.g. NoPeek's weighted DCor(x, h)
                    if extra is None:
                        smashed.backward(grad)
                    else:  # d/dtheta of <dL/dh, h> + extra: the server's gradient plus the local term
                        ((smashed * grad).sum() + extra).backward()
                    decayed_step(optimizer, self.cfg.lr, self.cfg.lr_decay, counter)
        if count == self.pending_count:
            self.drop_pending()
        else:  # later messages' batches still await theirs
            self.pending_first, self.pending_count = self.pending_first + count, self.pending_count - count

    def drop_pending(self) -> None:
        """No batch awaits a gradient any more (applied, or dropped by the server)."""
        self.pending_count = 0
        self.pending_stats_done = False
        self.graph = None

    @contextmanager
    def _trainable(self) -> Iterator[tuple[torch.nn.Module, torch.optim.Optimizer]]:
        """The model and optimizer a step goes through: under DP-SGD, per-sample
        gradients, clipped and noised (noise seeded per message); else the plain ones."""
        if not isinstance(self.defense, DPSGD):
            yield self.model, self.optimizer
            return
        with per_sample_gradients(self.model) as wrapped:
            seed = batch_seed(self.cfg, self.partition_id, self.pending_first)
            yield wrapped, self.defense.optimizer(self.optimizer, self.cfg.batch_size, seed)

    @property
    def epsilon(self) -> float | None:
        """DP-SGD: epsilon at run-config 'dp-delta' after this client's steps so far."""
        if not isinstance(self.defense, DPSGD):
            return None
        n = int(self.data.train_labels.shape[0])
        return self.defense.epsilon(self.counter - self.pending_count, min(self.cfg.batch_size / n, 1.0))

    def forward_next(self, count: int = 1) -> dict[str, ArrayRecord]:
        """Smashed data and labels of the next ``count`` batches (train mode), as records
        ``batch.0 .. batch.{count-1}``; all computed with the current weights.

        One batch (and :attr:`keeps_graph`): its autograd graph is kept for
        :meth:`apply_gradients` and its BN running statistics are updated here; else no graph
        is kept and the running statistics are updated by the recomputation.
        """
        if not 1 <= count <= self.cfg.batches_per_message:
            raise protocol.PayloadError(
                f"field 'instructions.forward' = {count}, expected 1..{self.cfg.batches_per_message} "
                "(run-config 'batches-per-message')"
            )
        self.model.train()
        records = {}
        # one graph at a time, for the only pending batch: not with several messages in flight
        keep = count == 1 and self.keeps_graph and self.cfg.messages_in_flight == 1
        if self.pending_count == 0:
            self.pending_first = self.counter
        self.pending_count += count  # pending batches: counters pending-first .. counter - 1
        self.pending_stats_done = keep
        self.graph = None
        for i in range(count):
            indices = self._indices(self.counter + i)
            inputs = self._inputs(indices, self.counter + i)
            seed = dropout_seed(self.cfg, self.partition_id, self.counter + i)
            if keep:  # BN running stats are updated here, once
                with seeded_dropout(self.model, seed):
                    smashed = self.model(inputs)
                self.graph = (self.counter + i, inputs, smashed)
                smashed = smashed.detach()
            else:  # BN running stats are updated once, in apply_gradients
                with torch.no_grad(), _frozen_running_stats(self.model), seeded_dropout(self.model, seed):
                    smashed = self.model(inputs)
            smashed = self.defense.release(smashed, batch_seed(self.cfg, self.partition_id, self.counter + i))
            records[protocol.batch_record(i)] = protocol.encode_batch(
                smashed, self.data.labels(indices), self.wire_dtype,
                protocol.batch_record(i),
            )
        self.counter += count
        return records

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
        smashed = self.defense.release(smashed, batch_seed(self.cfg, self.partition_id, HOLDOUT_BATCH))
        return protocol.encode_batch(
            smashed, self.data.labels(indices, "holdout"), self.wire_dtype
        )

    # -- BatchNorm recalibration (run-config bn-recalibration) ---------------------------------
    def calibration_batches(self, instructions: ConfigRecord) -> list[torch.Tensor]:
        """Inputs (not augmented) of the first 'instructions.samples' training samples, in batches."""
        samples = int(instructions.get("samples", 0))
        if samples < 1:
            raise protocol.PayloadError(f"field 'instructions.samples' = {samples}, expected >= 1")
        indices = torch.arange(min(samples, int(self.data.train_labels.shape[0])))
        return [self.data.inputs(chunk) for chunk in indices.split(self.cfg.batch_size)]

    def bn_moments(self, instructions: ConfigRecord) -> ArrayRecord:
        """Moments of the input of BN layer 'instructions.layer' over the calibration samples."""
        layers = batchnorm_layers(self.model)
        layer = str(instructions.get("layer", ""))
        if layer not in layers:
            raise protocol.PayloadError(f"field 'instructions.layer' = {layer!r}, expected one of {layers}")
        moments = input_moments(self.model, layer, self.calibration_batches(instructions))
        return protocol.encode_moments(moments.total, moments.squares, moments.count)

    def calibration_smashed(self, instructions: ConfigRecord) -> ArrayRecord:
        """Eval-mode smashed data of the calibration samples, released as in training (no labels)."""
        self.model.eval()
        with torch.no_grad():
            smashed = torch.cat([self.model(batch) for batch in self.calibration_batches(instructions)])
        smashed = self.defense.release(smashed, batch_seed(self.cfg, self.partition_id, CALIBRATION_BATCH))
        return protocol.encode_calibration(
            smashed.split(self.cfg.batch_size), self.wire_dtype
        )

    def save(self) -> None:
        state = self.context.state
        state[_MODEL_KEY] = ArrayRecord(self.model.state_dict())
        state[_OPTIM_KEY] = _adam_state_record(self.optimizer)
        if isinstance(self.defense, MinimaxPerturbation):
            state[_ADVERSARY_KEY] = ArrayRecord(self.defense.adversary.state_dict())
            state[_ADVERSARY_OPTIM_KEY] = _adam_state_record(self.defense.optimizer)
        self.token = uuid4().hex
        state[_PROGRESS_KEY] = ConfigRecord({
            "batch-counter": self.counter, "pending-first": self.pending_first,
            "pending-count": self.pending_count, "pending-stats-done": self.pending_stats_done,
            "run-key": self.run_key, "round": self.round, "live-token": self.token, "message": self.message,
        })

    def graph_bytes(self) -> int:
        """Rough memory of the kept graph: the smashed data times the activations saved per layer."""
        if self.graph is None:
            return 0
        smashed = self.graph[2]
        return smashed.numel() * smashed.element_size() * 4 * self.cfg.cut_layer

    # -- the site's own checkpoint (resume after a restart) ----------------------------------
    def state_dir(self) -> Path:
        """Where this site keeps its checkpoints: node-config 'state-dir', else
        ``<output-dir>/client-state``; one folder per run key."""
        root = self.context.node_config.get("state-dir") or Path(self.cfg.output_dir) / "client-state"
        return Path(str(root)).resolve() / self.run_key

    def start_round(self, instructions: ConfigRecord) -> None:
        """A round's first message: remember run key and round; after a server restart
        (``resume-round``), a fresh client reloads its own state of that round."""
        self.run_key = str(instructions.get("run-key", ""))
        self.round = int(instructions.get("round", 0))
        resume = int(instructions.get("resume-round", 0))
        if resume and self.fresh and self.run_key:
            saved = checkpoint.load_client_state(self.state_dir(), self.partition_id, resume)
            self.optimizer.load_state_dict(saved["optimizer"])
            self.counter = int(saved["batch-counter"])
            if isinstance(self.defense, MinimaxPerturbation):
                self.defense.load_state_dict(saved["defense"])

    def save_round_state(self) -> None:
        """After a round's closing message: write optimizer state and batch counter (atomic)."""
        if self.run_key:
            checkpoint.save_client_state(
                self.state_dir(), self.partition_id, self.round,
                {
                    "optimizer": self.optimizer.state_dict(), "batch-counter": self.counter,
                    **({"defense": self.defense.state_dict()} if isinstance(self.defense, MinimaxPerturbation) else {}),
                },
            )


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


#: This process's live clients by (run id, node id), least recently used first.
_LIVE: OrderedDict[tuple[int, int], SplitClient] = OrderedDict()
LIVE_MAX_CLIENTS = 32
LIVE_MAX_GRAPH_BYTES = 1 << 30  # kept graphs beyond this are evicted, oldest first


def live_client(cfg: RunConfig, context: Context) -> SplitClient:
    """The client that handles a message: the one this process kept for the node, if
    ``context.state`` is exactly what it saved (same token, same config), else one rebuilt
    from ``context.state``. A simulation's actor serves every node in turn, so a node's next
    message may come here or go to another process: the state is the reference, a kept
    client only saves rebuilding it and recomputing the pending batch's forward pass."""
    kept = _LIVE.pop((context.run_id, context.node_id), None)
    progress = context.state[_PROGRESS_KEY] if _PROGRESS_KEY in context.state else ConfigRecord()
    if kept is not None and kept.cfg == cfg and kept.token and progress.get("live-token") == kept.token:
        kept.context = context
        kept.fresh = not kept.run_key  # as a client rebuilt from this state would have it
        return kept
    return SplitClient(cfg, context)


def keep_live(client: SplitClient) -> None:
    """Keep a client that has just saved its state, within :data:`LIVE_MAX_CLIENTS` clients
    and :data:`LIVE_MAX_GRAPH_BYTES` of kept graphs (the least recently used go first)."""
    _LIVE[(client.context.run_id, client.context.node_id)] = client
    while len(_LIVE) > LIVE_MAX_CLIENTS or sum(c.graph_bytes() for c in _LIVE.values()) > LIVE_MAX_GRAPH_BYTES:
        _LIVE.popitem(last=False)


def build_client_app(override: RunConfig | None = None, mods: list[Mod] | None = None) -> ClientApp:
    """The ClientApp; ``override`` replaces ``context.run_config`` (programmatic runs).

    ``mods`` are Flower client mods wrapped around every handler.
    """
    client_app = ClientApp(mods=mods)

    def handler(body: Callable[[SplitClient, Message], RecordDict]) -> Callable:
        def run(message: Message, context: Context) -> Message:
            client = live_client(_config(context, override), context)
            reply = body(client, message)  # an error leaves the client out: the next message rebuilds
            client.save()
            keep_live(client)
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
                "class-counts": torch.bincount(client.data.train_labels, minlength=client.data.num_classes).tolist(),
                "partition-id": client.partition_id,
                "site-name": str(client.context.node_config.get("site-name", "")),
            }
        )
        return RecordDict({protocol.INFO: record})

    @client_app.train("step")
    @handler
    def step(client: SplitClient, message: Message) -> RecordDict:
        content = message.content
        instructions = protocol.require_record(content, protocol.INSTRUCTIONS, ConfigRecord)
        starts = protocol.CLIENT_WEIGHTS in content  # a round's (or segment's, or relay's) first message
        client.check_order(instructions, starts)
        if starts:
            client.load_weights(content[protocol.CLIENT_WEIGHTS])
        if "round" in instructions:
            client.start_round(instructions)
        if protocol.grad_record(0) in content:
            client.apply_gradients(content)
        if starts or client.cfg.messages_in_flight == 1:
            client.drop_pending()  # batches without a gradient were dropped by the server
        forward = int(instructions.get("forward", 0))
        reply = RecordDict(client.forward_next(forward) if forward else {})
        if instructions.get("send-weights", False):
            reply[protocol.CLIENT_WEIGHTS] = ArrayRecord(client.model.state_dict())
            info: dict = {"num-train": int(client.data.train_labels.shape[0])}
            if client.epsilon is not None:
                info["epsilon"] = client.epsilon
            reply[protocol.INFO] = ConfigRecord(info)
            client.save_round_state()
        return reply

    def calibration_request(client: SplitClient, message: Message) -> ConfigRecord:
        """A BatchNorm recalibration query: load its client weights, return its instructions."""
        client.load_weights(protocol.require_record(message.content, protocol.CLIENT_WEIGHTS, ArrayRecord))
        return protocol.require_record(message.content, protocol.INSTRUCTIONS, ConfigRecord)

    @client_app.query("bn_stats")
    @handler
    def bn_stats(client: SplitClient, message: Message) -> RecordDict:
        return RecordDict({protocol.BN_MOMENTS: client.bn_moments(calibration_request(client, message))})

    @client_app.query("bn_smashed")
    @handler
    def bn_smashed(client: SplitClient, message: Message) -> RecordDict:
        return RecordDict({protocol.CALIBRATION: client.calibration_smashed(calibration_request(client, message))})

    @client_app.query("attack")
    @handler
    def attack(client: SplitClient, message: Message) -> RecordDict:
        """Only the configured adversarial client answers: reconstruct intercepted smashed data."""
        from pgsl_flower.attacks.interception import reconstruct_intercepted

        if client.partition_id != client.cfg.adversary or client.cfg.adversary_role != "client":
            raise PermissionError(
                f"partition {client.partition_id} is not the adversarial client (run-config 'adversary' = "
                f"{client.cfg.adversary}, 'adversary-role' = {client.cfg.adversary_role!r}); honest clients "
                "refuse query.attack"
            )
        content = message.content
        client.load_weights(protocol.require_record(content, protocol.CLIENT_WEIGHTS, ArrayRecord))
        smashed = protocol.array_to_tensor(
            protocol.require_array(
                protocol.require_record(content, protocol.INTERCEPTED, ArrayRecord), "h", protocol.INTERCEPTED
            ),
            field=f"{protocol.INTERCEPTED}.h",
            dtype=torch.float32,
            shape=(None, *client.smashed_shape),
            max_bytes=client.cfg.max_payload_bytes,
        )
        reconstructions = reconstruct_intercepted(
            client.cfg, client.data, client.model, smashed, client.partition_id,
            tuple(client.data.train_images.shape[1:]),
        )
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
