"""Server side of split learning: the server model's step and the two schedules.

- **SplitFed** (Thapa et al. 2022, the SFLV2 variant): all selected clients
  work in parallel on one shared server model. Each exchange carries, to every
  active client, dL/dh of its previous batch and the request for its next one;
  the server processes the returned batches one after the other (one optimizer
  step per client batch, as centralized training would at the same batch size).
  At the round's end the client parts are averaged (FedAvg, weighted by the
  clients' training-set sizes) and sent out at the next round's start.
- **Sequential split learning** (Gupta & Raskar 2018): clients take turns in a
  seeded order; the client part's weights are relayed from one client to the
  next through the server.

A client that fails (an error reply, no reply, or an invalid payload) is
dropped for the rest of the round and logged; the round goes on while at
least ``min-available-clients`` remain.
"""

from __future__ import annotations

import random
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from logging import WARNING

import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, RecordDict
from flwr.common.logger import log
from flwr.serverapp import Grid
from torch.nn import functional as F

from pgsl_flower import protocol
from pgsl_flower.batchnorm import Moments, pool_moments, set_running_stats, update_bn
from pgsl_flower.classification_metrics import ClassificationReport, confusion_matrix, report_from_confusion
from pgsl_flower.config import RunConfig
from pgsl_flower.evaluation import score_smashed
from pgsl_flower.local_data import batches_per_epoch
from pgsl_flower.model import build_server_net, decayed_step, make_optimizer
from pgsl_flower.sampling import sample_clients
from pgsl_flower.transport import Courier


@dataclass
class RoundStats:
    """What one training round cost and achieved (summed over clients)."""

    loss_sum: float = 0.0
    #: The server's training predictions (rows: true class, columns: predicted), for balanced accuracy.
    confusion: torch.Tensor | None = None
    samples: int = 0
    bytes_up: int = 0
    bytes_down: int = 0
    messages: int = 0
    train_seconds: float = 0.0
    failed: list[int] = field(default_factory=list)
    epsilon: float | None = None  # DP-SGD: the largest epsilon a client reported this round

    @property
    def train_loss(self) -> float:
        return self.loss_sum / max(self.samples, 1)

    def count(self, predictions: torch.Tensor, labels: torch.Tensor, num_classes: int) -> None:
        batch = confusion_matrix(predictions, labels, num_classes)
        self.confusion = batch if self.confusion is None else self.confusion + batch

    @property
    def train_accuracy(self) -> float:
        return 0.0 if self.confusion is None else float(self.confusion.diagonal().sum()) / max(self.samples, 1)

    def train_report(self, classes: Sequence[str]) -> ClassificationReport | None:
        return None if self.confusion is None else report_from_confusion(self.confusion, classes)


def balanced_class_weights(counts: Sequence[int]) -> torch.Tensor:
    """Weights ``n / (K * n_k)`` (scikit-learn's "balanced"): every class contributes equally to the
    loss; a class without samples gets weight 0."""
    counts_t = torch.as_tensor(list(counts), dtype=torch.float32)
    present = counts_t > 0
    weights = torch.zeros_like(counts_t)
    weights[present] = counts_t.sum() / (int(present.sum()) * counts_t[present])
    return weights


class ServerModel:
    """The server tower, its optimizer, and the split training step."""

    def __init__(self, cfg: RunConfig, num_classes: int, device: torch.device) -> None:
        self.device = device
        self.model = build_server_net(cfg, num_classes).to(device)
        self.optimizer = make_optimizer(self.model, cfg.lr, cfg.weight_decay)
        self.cfg = cfg
        self.steps_taken = 0
        #: Per-class loss weights (run-config class-balance = 'loss'); None: plain cross-entropy.
        self.class_weights: torch.Tensor | None = None

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Cross-entropy, class-weighted when :attr:`class_weights` is set."""
        weight = None if self.class_weights is None else self.class_weights.to(logits.device)
        return F.cross_entropy(logits, labels, weight=weight)

    def step(self, smashed: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, float, torch.Tensor]:
        """One optimizer step on a client batch; returns (dL/dh, loss sum, predicted classes)."""
        self.model.train()
        h = smashed.to(self.device).detach().requires_grad_(True)  # a fresh leaf: a tensor stepped on twice does not sum its gradients
        y = labels.to(self.device)
        logits = self.model(h)
        loss = self.loss(logits, y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        decayed_step(self.optimizer, self.cfg.lr, self.cfg.lr_decay, self.steps_taken)
        self.steps_taken += 1
        return h.grad.detach().cpu(), loss.item() * len(y), logits.argmax(1).cpu()

    def calibration_forward(self, smashed: torch.Tensor) -> object:
        """The forward pass BatchNorm recalibration runs (PGSL: recovery and three towers)."""
        return self.model(smashed.to(self.device))

    def recalibrate(self, smashed: torch.Tensor, seed: int) -> None:
        """Re-estimate the running statistics of every BN layer on pooled smashed data, shuffled
        (seeded) into batches of 'batch-size' (:func:`pgsl_flower.batchnorm.update_bn`)."""
        order = torch.randperm(len(smashed), generator=torch.Generator().manual_seed(seed))
        update_bn(self.model, self.calibration_forward, smashed[order].split(self.cfg.batch_size))

    @torch.no_grad()
    def stream_scores(self, smashed: torch.Tensor) -> dict[str, torch.Tensor]:
        """Softmax scores of the (single) output, in eval mode."""
        self.model.eval()
        return {"output": self.model(smashed.to(self.device)).softmax(1)}

    @staticmethod
    def decide(scores: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return scores["output"]


def fedavg(states: Sequence[Mapping[str, torch.Tensor]], weights: Sequence[float]) -> dict[str, torch.Tensor]:
    """Weighted average of state dicts; integer buffers (BN batch counters) take the max."""
    if not states:
        raise ValueError("fedavg needs at least one state")
    total = float(sum(weights))
    out: dict[str, torch.Tensor] = {}
    for key, ref in states[0].items():
        if ref.is_floating_point():
            out[key] = sum(s[key].double() * (w / total) for s, w in zip(states, weights, strict=True)).to(ref.dtype)
        else:
            out[key] = torch.stack([s[key] for s in states]).max(0).values
    return out


class SplitTrainer:
    """Drives the protocol over a Flower ``Grid`` for one run."""

    def __init__(
        self,
        grid: Grid,
        cfg: RunConfig,
        server: ServerModel,
        smashed_shape: tuple[int, ...],
        num_classes: int,
        client_weights: dict[str, torch.Tensor],
    ) -> None:
        self.grid = grid
        self.cfg = cfg
        self.server = server
        self.smashed_shape = smashed_shape
        self.wire_dtype = protocol.payload_dtype(cfg.payload_dtype)  # smashed data and gradients on the wire
        self.num_classes = num_classes
        self.client_weights = client_weights  # the global (aggregated or relayed) client part
        self.train_sizes: dict[int, int] = {}
        self.class_counts: dict[int, list[int]] = {}  # node -> training samples per class (query.info)
        self.partitions: dict[int, int] = {}  # node id -> partition id (for logs and tests)
        self.site_names: dict[int, str] = {}  # node id -> node-config 'site-name' (deployments)
        self.courier = Courier(grid, cfg.reply_timeout)
        self.window = cfg.max_in_flight or float("inf")  # requests out at once
        self.forwards: dict[int, int] = {}  # node -> batches it has sent (its batch counter)
        #: Called with (node, batch counter, smashed data) for every accepted training
        #: batch: the network's view, used to model an interceptor (attacks.interception).
        self.tap: Callable[[int, int, torch.Tensor], None] | None = None
        self.run_key = ""  # names the run for the sites' own checkpoints (the run folder's name)
        self.round = 0
        self.resume_round = 0  # > 0: restarted after this round; sites reload their state
        self.resumed: set[int] = set()  # nodes already told to reload

    # -- messaging -------------------------------------------------------------------------
    def _reply(self, node: int, message_id: str, stats: RoundStats) -> Message | None:
        """Wait for a node's reply; an error reply or a timeout drops the node."""
        reply = self.courier.wait(message_id)
        if reply is None:
            self._fail(node, f"no reply within {self.cfg.reply_timeout} s", stats)
        elif reply.has_error():
            self._fail(node, f"client error: {reply.error.reason}", stats)
            reply = None
        return reply

    def _exchange(
        self, contents: Mapping[int, RecordDict], message_type: str, group: str, stats: RoundStats
    ) -> dict[int, Message]:
        """Send one message per node, wait for all replies; failed nodes are dropped."""
        return dict(self._replies(deque(contents.items()), message_type, group, stats))

    def _replies(
        self, pending: deque[tuple[int, RecordDict]], message_type: str, group: str, stats: RoundStats
    ) -> Iterator[tuple[int, Message]]:
        """Send the queued ``(node, content)`` pairs, at most ``max-in-flight`` out at
        once, and yield ``(node, reply)`` in sending order (failed nodes are skipped).

        The caller may append to ``pending`` while iterating.
        """
        flight: deque[tuple[int, str]] = deque()
        while pending or flight:
            while pending and len(flight) < self.window:
                node, content = pending.popleft()
                flight.append((node, self.courier.push(node, content, message_type, group)))
            node, message_id = flight.popleft()
            if (reply := self._reply(node, message_id, stats)) is not None:
                yield node, reply

    def _fail(self, node: int, reason: str, stats: RoundStats) -> None:
        site = f" ({self.site_names[node]})" if self.site_names.get(node) else ""
        log(WARNING, "node %s%s dropped for this round: %s", node, site, reason)
        if node not in stats.failed:
            stats.failed.append(node)

    def _check_quorum(self, alive: Iterable[int], sampled: int | None = None) -> None:
        """Stop below ``min-available-clients`` (or below all ``sampled`` clients, if fewer)."""
        count = len(list(alive))
        required = self.cfg.min_available_clients
        if sampled is not None:
            required = min(required, sampled)
        if count < required:
            raise RuntimeError(
                f"only {count} client(s) left in the round, fewer than run-config "
                f"'min-available-clients' = {self.cfg.min_available_clients}"
                + (f" (of {sampled} sampled)" if sampled is not None else "")
            )

    def query_info(self, nodes: Sequence[int]) -> None:
        """Ask each client the size of its training split (sets steps per round)."""
        stats = RoundStats()
        contents = {node: RecordDict() for node in nodes}
        for node, reply in self._exchange(contents, protocol.QUERY_INFO, "info", stats).items():
            try:
                info = protocol.require_record(reply.content, protocol.INFO, ConfigRecord)
                size, partition, classes = (int(info[k]) for k in ("num-train", "partition-id", "num-classes"))
                counts = [int(c) for c in info["class-counts"]]  # type: ignore[union-attr]
            except (protocol.PayloadError, KeyError, TypeError, ValueError) as err:
                self._fail(node, f"malformed info reply ({err!r})", stats)
                continue
            if classes != self.num_classes or size < 1:
                self._fail(node, f"reports {classes} classes and {size} samples; server has {self.num_classes} classes", stats)
                continue
            if len(counts) != classes or min(counts) < 0 or sum(counts) != size:
                self._fail(node, f"class-counts {counts} do not add up to its {size} samples in {classes} classes", stats)
                continue
            if partition in self.partitions.values():
                self._fail(node, f"partition-id {partition} is already taken by another node", stats)
                continue
            self.train_sizes[node], self.partitions[node], self.class_counts[node] = size, partition, counts
            self.site_names[node] = str(info.get("site-name", ""))
        self._check_quorum(self.train_sizes)

    def total_class_counts(self) -> list[int]:
        """Training samples per class over all registered clients."""
        return [sum(counts[k] for counts in self.class_counts.values()) for k in range(self.num_classes)]

    def nodes_by_partition(self) -> list[int]:
        """The registered nodes ordered by partition id: the server's processing order,
        the same in every run whatever ids the nodes get."""
        return sorted(self.train_sizes, key=self.partitions.__getitem__)

    def sample(self, fraction: float, minimum: int, seed: int, round_num: int) -> list[int]:
        """The nodes training in ``round_num`` (drawn by partition id, see :func:`sample_clients`)."""
        by_partition = {self.partitions[node]: node for node in self.train_sizes}
        drawn = sample_clients(sorted(by_partition), fraction, minimum, seed, round_num)
        return [by_partition[p] for p in drawn]

    def steps_for(self, node: int) -> int:
        steps = batches_per_epoch(self.train_sizes[node], self.cfg.batch_size)
        return min(steps, self.cfg.batches_per_round) if self.cfg.batches_per_round else steps

    # -- training --------------------------------------------------------------------------
    def _server_steps(self, node: int, reply: Message, count: int, stats: RoundStats) -> list[torch.Tensor] | None:
        """Validate a client's ``count`` batches, then run the server step on each in
        order; returns dL/dh per batch (None, and the node dropped, on a bad payload)."""
        try:
            batches = protocol.decode_batches(
                reply.content,
                count,
                smashed_shape=self.smashed_shape,
                max_batch=self.cfg.batch_size,
                num_classes=self.num_classes,
                max_bytes=self.cfg.max_payload_bytes,
                dtype=self.wire_dtype,
            )
        except protocol.PayloadError as err:
            self._fail(node, f"rejected payload: {err}", stats)
            return None
        grads = []
        for smashed, labels in batches:
            counter = self.forwards.get(node, 0)
            self.forwards[node] = counter + 1
            if self.tap is not None:
                self.tap(node, counter, smashed)
            grad, loss_sum, predictions = self.server.step(smashed, labels)
            stats.loss_sum += loss_sum
            stats.count(predictions, labels, self.num_classes)
            stats.samples += len(labels)
            grads.append(grad)
        return grads

    def _round_instructions(self, node: int) -> dict[str, str | int]:
        """What a node's first message of a round carries besides the weights."""
        instructions: dict[str, str | int] = {"run-key": self.run_key, "round": self.round}
        if self.resume_round and node not in self.resumed:
            instructions["resume-round"] = self.resume_round  # a restarted run: reload the site's state
            self.resumed.add(node)
        return instructions

    def _pipeline(
        self, steps: Mapping[int, int], group: str, stats: RoundStats
    ) -> dict[int, Message]:
        """Train each node for ``steps[node]`` batches from the global client weights.

        The server handles batches in a fixed order (message by message, nodes in
        the given order), so the result does not depend on reply timing. A message
        carries up to ``batches-per-message`` (k) batches; the server steps on them
        one by one and returns their k gradients with the next request, so a client
        computes k forwards with the same weights (see ``SplitClient.apply_gradients``
        for the staleness this causes). Up to ``max-in-flight`` requests are out at
        once: node i gets its gradients and the request for its next batches while
        the server still works on the batches of the nodes before it in the queue,
        so clients compute in parallel with the server. The cap matters at large N:
        Flower's simulation engine scans every stored message for every node it
        polls, so its cost grows with N times the messages in flight.

        ``messages-in-flight`` = d > 1 (deployments) keeps d requests out to each node:
        the gradients of a node's reply go out with the request d messages later, so
        the node's SuperNode finds its next message waiting when it has sent a reply
        (instead of sleeping after an empty pull) and the node computes while the
        server steps on its previous batches. Once all of a node's batches are
        requested, gradients wait for the node's last reply and go out with the
        closing request. Returns each surviving node's final reply (holding its
        client weights).
        """
        nodes = list(steps)
        weights = protocol.encode_state(self.client_weights)
        per_message = self.cfg.batches_per_message
        depth = self.cfg.messages_in_flight
        requested = dict.fromkeys(nodes, 0)  # batches asked for so far
        sent = dict.fromkeys(nodes, 0)  # messages sent so far
        # per request out: the batches it asks for; None for the closing request (the weights)
        expected: dict[int, deque[int | None]] = {node: deque() for node in nodes}
        held: dict[int, list[torch.Tensor]] = {node: [] for node in nodes}  # gradients not sent yet

        def request(node: int) -> tuple[int, RecordDict]:
            forward = min(per_message, steps[node] - requested[node])
            closing = forward == 0  # every batch is requested and stepped on: ask for the weights
            instructions: dict = {"forward": forward, "send-weights": closing, "message": sent[node]}
            content = RecordDict(protocol.encode_gradients(held[node], self.wire_dtype))
            if sent[node] == 0:
                content[protocol.CLIENT_WEIGHTS] = weights
                instructions.update(self._round_instructions(node))
            content[protocol.INSTRUCTIONS] = ConfigRecord(instructions)
            requested[node] += forward
            sent[node] += 1
            held[node] = []
            expected[node].append(None if closing else forward)
            return node, content

        # Round robin: a node goes back to the end of the queue after each message.
        pending = deque(request(node) for _ in range(depth) for node in nodes
                        if sent[node] == 0 or requested[node] < steps[node])
        done: dict[int, Message] = {}
        for node, reply in self._replies(pending, protocol.TRAIN_STEP, group, stats):
            count = expected[node].popleft()
            if node in stats.failed:
                continue  # an earlier message of this node failed: the rest of its replies are void
            if count is None:
                done[node] = reply  # the closing reply, with the client's weights
                continue
            grads = self._server_steps(node, reply, count, stats)
            if grads is None:
                continue
            held[node] += grads
            if requested[node] < steps[node] or not expected[node]:
                pending.append(request(node))
        return done

    def _collect_weights(self, finals: Mapping[int, Message], stats: RoundStats) -> list[tuple[dict[str, torch.Tensor], int]]:
        collected = []
        for node in sorted(finals, key=self.partitions.__getitem__):  # a fixed summation order
            try:
                state = protocol.decode_state(
                    protocol.require_record(finals[node].content, protocol.CLIENT_WEIGHTS, ArrayRecord),
                    self.client_weights,
                    field=protocol.CLIENT_WEIGHTS,
                    max_bytes=self.cfg.max_payload_bytes,
                )
            except protocol.PayloadError as err:
                self._fail(node, f"rejected weights: {err}", stats)
                continue
            collected.append((state, self.train_sizes[node]))
            info = finals[node].content.get(protocol.INFO)
            if isinstance(info, ConfigRecord) and isinstance(info.get("epsilon"), float):
                stats.epsilon = max(stats.epsilon or 0.0, float(info["epsilon"]))
        return collected

    def _aggregate(self, finals: Mapping[int, Message], stats: RoundStats) -> None:
        """FedAvg of the returned client parts (weighted by training-set size)."""
        collected = self._collect_weights(finals, stats)
        if collected:
            self.client_weights = fedavg([s for s, _ in collected], [n for _, n in collected])

    def train_round(self, nodes: Sequence[int], round_num: int) -> RoundStats:
        """One round of the configured schedule over ``nodes`` (the clients sampled for it).

        SplitFed averages the client parts at the round's end, and every
        ``client-sync-every`` steps within it when that is > 0.
        """
        stats = RoundStats()
        self.round = round_num
        before = (self.courier.bytes_up, self.courier.bytes_down, self.courier.messages)
        started = time.perf_counter()
        total = {node: self.steps_for(node) for node in nodes}
        if self.cfg.schedule == "splitfed":
            segment = self.cfg.client_sync_every or max(total.values())
            for first in range(0, max(total.values()), segment):
                steps = {
                    node: min(total[node] - first, segment)
                    for node in nodes
                    if total[node] > first and node not in stats.failed
                }
                group = f"round-{round_num}.step-{first}"
                self._aggregate(self._pipeline(steps, group, stats), stats)
                self._check_quorum((n for n in nodes if n not in stats.failed), len(nodes))
        else:
            order = list(nodes)
            random.Random(self.cfg.seed * 7919 + round_num).shuffle(order)
            for node in order:
                finals = self._pipeline({node: total[node]}, f"round-{round_num}.node-{node}", stats)
                collected = self._collect_weights(finals, stats)
                if collected:  # a failed client passes the weights on unchanged
                    self.client_weights = collected[0][0]
            self._check_quorum((n for n in order if n not in stats.failed), len(nodes))
        if self.cfg.recalibrates_bn:
            self.recalibrate_bn([n for n in nodes if n not in stats.failed], round_num, stats)
        stats.train_seconds = time.perf_counter() - started
        stats.bytes_up = self.courier.bytes_up - before[0]
        stats.bytes_down = self.courier.bytes_down - before[1]
        stats.messages = self.courier.messages - before[2]
        return stats

    # -- BatchNorm recalibration (run-config bn-recalibration, pgsl_flower.batchnorm) ------
    def recalibrate_bn(self, nodes: Sequence[int], round_num: int, stats: RoundStats) -> None:
        """Re-estimate the BN running statistics of the aggregated client part (layer by layer,
        from the clients' input moments) and then of the server model (on the clients'
        eval-mode smashed data). A client that fails is dropped; the others' data suffice."""
        if not nodes:
            return
        samples = -(-self.cfg.bn_calibration_samples // len(nodes))  # per client: ceil(total / clients)
        layers = [key.removesuffix(".running_mean") for key in self.client_weights if key.endswith(".running_mean")]
        alive = list(nodes)
        for layer in layers:
            channels = self.client_weights[f"{layer}.running_mean"].shape[0]
            weights = protocol.encode_state(self.client_weights)
            contents = {node: RecordDict({protocol.CLIENT_WEIGHTS: weights, protocol.INSTRUCTIONS: ConfigRecord(
                {"layer": layer, "samples": samples})}) for node in alive}
            parts = []
            for node, reply in self._exchange(contents, protocol.QUERY_BN_STATS, f"bn-{round_num}-{layer}", stats).items():
                try:
                    parts.append(Moments(*protocol.decode_moments(reply.content, channels,
                                                                  max_bytes=self.cfg.max_payload_bytes)))
                except protocol.PayloadError as err:
                    self._fail(node, f"rejected BatchNorm moments: {err}", stats)
            alive = [n for n in alive if n not in stats.failed]
            if parts:
                set_running_stats(self.client_weights, layer, *pool_moments(parts))
        weights = protocol.encode_state(self.client_weights)
        contents = {node: RecordDict({protocol.CLIENT_WEIGHTS: weights, protocol.INSTRUCTIONS: ConfigRecord(
            {"samples": samples})}) for node in alive}
        smashed = []
        for node, reply in self._exchange(contents, protocol.QUERY_BN_SMASHED, f"bn-{round_num}-server", stats).items():
            try:
                smashed.append(protocol.decode_calibration(
                    reply.content, smashed_shape=self.smashed_shape, max_batch=self.cfg.batch_size,
                    max_samples=samples, max_bytes=self.cfg.max_payload_bytes, dtype=self.wire_dtype))
            except protocol.PayloadError as err:
                self._fail(node, f"rejected calibration smashed data: {err}", stats)
        if smashed:
            self.server.recalibrate(torch.cat(smashed), self.cfg.seed * 7_907 + round_num)

    # -- the adversarial client -----------------------------------------------------------
    def request_attack(
        self, node: int, smashed: torch.Tensor, weights: Mapping[str, torch.Tensor],
        image_shape: tuple[int, ...], attacks: Sequence[str],
    ) -> dict[str, torch.Tensor]:
        """Send intercepted smashed data and the client part it was computed with to the
        adversarial client; returns its validated reconstructions per attack, (M, *image_shape)."""
        stats = RoundStats()
        content = RecordDict(
            {
                protocol.INTERCEPTED: ArrayRecord({"h": protocol.tensor_to_array(smashed)}),
                protocol.CLIENT_WEIGHTS: protocol.encode_state(weights),
            }
        )
        replies = self._exchange({node: content}, protocol.QUERY_ATTACK, "attack", stats)
        if node not in replies:
            raise RuntimeError(f"the adversarial client (node {node}) failed: {stats.failed}")
        record = protocol.require_record(replies[node].content, protocol.RECONSTRUCTIONS, ArrayRecord)
        return {
            name: protocol.array_to_tensor(
                protocol.require_array(record, name, protocol.RECONSTRUCTIONS),
                field=f"{protocol.RECONSTRUCTIONS}.{name}",
                dtype=torch.float32,
                shape=(len(smashed), *image_shape),
                max_bytes=self.cfg.max_payload_bytes,
            )
            for name in attacks
        }

    # -- evaluation ------------------------------------------------------------------------
    def evaluate_clients(
        self, nodes: Sequence[int], round_num: int, classes: Sequence[str]
    ) -> tuple[dict[int, float], ClassificationReport | None]:
        """Accuracy on each client's held-out split (its smashed data, global weights), and the
        report of all held-out predictions pooled (None when no client evaluated)."""
        if not self.cfg.local_eval_samples:
            return {}, None
        stats = RoundStats()
        weights = protocol.encode_state(self.client_weights)
        contents = {node: RecordDict({protocol.CLIENT_WEIGHTS: weights}) for node in nodes}
        accuracy: dict[int, float] = {}
        pooled: torch.Tensor | None = None
        for node, reply in self._exchange(contents, protocol.EVALUATE, f"eval-{round_num}", stats).items():
            if protocol.BATCH not in reply.content:
                continue  # the client has no held-out samples
            try:
                smashed, labels = protocol.decode_batch(
                    reply.content,
                    smashed_shape=self.smashed_shape,
                    max_batch=max(self.cfg.local_eval_samples, 1),
                    num_classes=self.num_classes,
                    max_bytes=self.cfg.max_payload_bytes,
                    dtype=self.wire_dtype,
                )
            except protocol.PayloadError as err:
                log(WARNING, "node %s evaluation payload rejected: %s", node, err)
                continue
            report = score_smashed(self.server, [smashed], labels, classes)["report"]
            accuracy[node] = report.accuracy
            pooled = report.confusion if pooled is None else pooled + report.confusion
        return accuracy, None if pooled is None else report_from_confusion(pooled, classes)
