"""The site worker (pgsl_flower.pilot.site_worker): a real worker serving a real Unix socket
answers exactly what the ClientApp answers in-process, carries the node's state back, and
reports what went wrong by name."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import torch
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.common import Metadata

from pgsl_flower import protocol
from pgsl_flower.client_app import app as local_app
from pgsl_flower.config import RunConfig
from pgsl_flower.model import build_client_net
from pgsl_flower.pilot.site_worker import SITE_WORKER_KEY, SiteWorkerError, forward, listen, serve
from pgsl_flower.site_app import app as site_app


def _message(message_type: str, content: RecordDict, message_id: str) -> Message:
    metadata = Metadata(run_id=7, message_id=message_id, src_node_id=1, dst_node_id=5, reply_to_message_id="",
                        group_id="g", created_at=time.time(), ttl=600.0, message_type=message_type)
    return Message(content, metadata=metadata)


def _context(node_config: dict) -> Context:
    cfg = RunConfig(samples_per_client=96, batch_size=16, seed=4, local_eval_samples=8, batches_per_message=2)
    return Context(run_id=7, node_id=5, node_config=node_config, state=RecordDict(),
                   run_config=cfg.as_run_config())


@pytest.fixture
def worker(tmp_path):
    path = tmp_path / "site.sock"
    thread = threading.Thread(target=serve, args=(path,), daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not path.is_socket():
        assert time.monotonic() < deadline, "the worker never listened"
        time.sleep(0.05)
    return path


def test_worker_answers_as_the_client_app_does_in_process(worker):
    """query.info, then two train.step messages (batches out; their gradients in and the
    weights out): the replies and the node's state match the
    in-process ClientApp's, message by message (the same handlers, the same seeds)."""
    node = {"partition-id": 1, "num-partitions": 4}
    remote, here = _context({**node, SITE_WORKER_KEY: str(worker)}), _context(node)
    weights = protocol.encode_state(build_client_net(RunConfig(), 1).state_dict())
    steps = [
        ("query.info", RecordDict()),
        ("train.step", RecordDict({protocol.CLIENT_WEIGHTS: weights,
                                   protocol.INSTRUCTIONS: ConfigRecord({"forward": 2, "message": 0})})),
    ]
    for index in range(3):
        if index == 2:  # the gradients of both batches back; the weights asked for
            shape = expected.content[protocol.batch_record(0)]["h"].numpy().shape
            grads = [torch.randn(shape, generator=torch.Generator().manual_seed(i)) for i in range(2)]
            steps.append(("train.step", RecordDict({
                **protocol.encode_gradients(grads),
                protocol.INSTRUCTIONS: ConfigRecord({"forward": 0, "send-weights": True, "message": 1})})))
        message_type, content = steps[index]
        message = _message(message_type, content, f"m{index}")
        got, expected = site_app(message, remote), local_app(message, here)
        assert got.metadata.reply_to_message_id == f"m{index}"
        assert not got.has_error(), got.error
        assert got.content.keys() == expected.content.keys()
        for name in got.content.keys():
            record, reference = got.content[name], expected.content[name]
            if isinstance(record, ConfigRecord):
                assert dict(record) == dict(reference), name
            else:
                for key in record:
                    assert (record[key].numpy() == reference[key].numpy()).all(), f"{name}.{key}"
    assert remote.state.keys() == here.state.keys() and len(remote.state.keys()) > 0
    assert remote.state["client-progress"]["batch-counter"] == 2
    assert protocol.CLIENT_WEIGHTS in got.content  # the last reply: weights after the two steps, equal above


def test_worker_reports_the_handlers_error_and_keeps_serving(worker):
    context = _context({SITE_WORKER_KEY: str(worker)})  # no partition-id
    with pytest.raises(SiteWorkerError, match=r"handler failed: ValueError: node-config key 'partition-id' missing"):
        site_app(_message("query.info", RecordDict(), "bad"), context)
    assert list(context.state.keys()) == []  # left as it was
    context = _context({"partition-id": 0, "num-partitions": 2, SITE_WORKER_KEY: str(worker)})
    reply = site_app(_message("query.info", RecordDict(), "good"), context)
    assert int(reply.content[protocol.INFO]["partition-id"]) == 0


def test_missing_worker_and_a_non_socket_path_are_named(tmp_path):
    path = tmp_path / "nobody.sock"
    with pytest.raises(SiteWorkerError, match=rf"node-config 'site-worker' = '{path}': no answer from a site worker there"):
        forward(str(path), _message("query.info", RecordDict(), "x"), _context({}))
    regular = tmp_path / "data.csv"
    regular.write_text("id,label\n")
    with pytest.raises(FileExistsError, match=r"data.csv: a file that is not a socket"):
        listen(regular)
    assert regular.read_text() == "id,label\n"  # not replaced


def test_socket_is_owner_only(tmp_path):
    server = listen(tmp_path / "w.sock")
    try:
        assert (Path(tmp_path / "w.sock").stat().st_mode & 0o777) == 0o600
    finally:
        server.close()
