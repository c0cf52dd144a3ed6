"""Wire format of the split-learning protocol and validation of every payload.

Message types (Flower requires ``train|evaluate|query[.<name>]``):

- ``query.info``   server -> client: nothing; reply: sizes of the client's splits.
- ``train.step``   server -> client: optional ``client-weights`` (round start or
  relay), ``grad.0 .. grad.{m-1}`` (dL/dh of the m batches the client sent
  last), and the ``instructions`` (``forward``: how many next batches to send,
  up to run-config ``batches-per-message``; ``send-weights``; ``message``: its
  index among the node's messages of this exchange sequence, 0 for the first, which
  carries the weights; at a round's first message ``run-key``/``round``, and
  ``resume-round`` after a restart). With run-config ``messages-in-flight`` = d > 1
  the m gradients are those of the client's oldest m pending batches (the reply d
  messages back) and up to d messages are out to the client at once;
  reply: ``batch.0 .. batch.{n-1}`` (smashed data ``h`` + labels each) and
  optional ``client-weights``.
- ``evaluate``     server -> client: ``client-weights``; reply: ``batch`` with the
  smashed data of the client's held-out split.
- ``query.bn_stats`` server -> client (run-config ``bn-recalibration``): the
  aggregated ``client-weights`` and ``instructions`` (``layer``: a BatchNorm layer of
  the client part, ``samples``: how many training samples to use); reply:
  ``bn-moments`` (per-channel sum and sum of squares of that layer's input, and the
  count), see :mod:`pgsl_flower.batchnorm`.
- ``query.bn_smashed`` server -> client: the re-estimated ``client-weights`` and
  ``instructions`` (``samples``); reply: ``calibration`` (eval-mode smashed data of
  that many training samples, no labels, one array ``h.i`` per batch), for the
  server's BatchNorm statistics.
- ``query.attack`` server -> the adversarial client only (attack experiments):
  ``intercepted`` (smashed data of other clients' batches) and the
  ``client-weights`` they were computed with; reply: ``reconstructions``, one
  image tensor per attack. Honest clients refuse it.

Raw images never appear in any payload. Each side decodes with
:func:`array_to_tensor`, which checks dtype, shape, size and finiteness *before*
anything is used, and names the offending field.

Run-config ``payload-dtype`` (:data:`PAYLOAD_DTYPES`) sets how the smashed data
(``batch*.h``, ``calibration.h.*``) and the gradients (``grad.*.h``) travel:
``float32`` (default) or ``float16``, half the bytes. The sender casts with
:func:`wire_array`, which refuses a value the cast would overflow to inf; the
receiver checks the wire dtype and finiteness as for any payload and computes in
float32. Model weights, moments and attack payloads always travel as float32.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, RecordDict

TRAIN_STEP = "train.step"
EVALUATE = "evaluate"
QUERY_INFO = "query.info"
QUERY_ATTACK = "query.attack"
QUERY_BN_STATS = "query.bn_stats"
QUERY_BN_SMASHED = "query.bn_smashed"

BATCH = "batch"
GRAD = "grad"
CLIENT_WEIGHTS = "client-weights"
INSTRUCTIONS = "instructions"
INFO = "info"
INTERCEPTED = "intercepted"
RECONSTRUCTIONS = "reconstructions"
BN_MOMENTS = "bn-moments"
CALIBRATION = "calibration"

_NUMPY_STYPE = "numpy.ndarray"

#: Run-config 'payload-dtype' -> the dtype smashed data and gradients travel as.
PAYLOAD_DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "float16": torch.float16}


class PayloadError(ValueError):
    """A message payload is malformed: wrong dtype/shape, non-finite, or too large."""


def tensor_to_array(tensor: torch.Tensor) -> Array:
    """Serialise a tensor (detached, moved to CPU) as a Flower ``Array``."""
    return Array(tensor.detach().cpu().contiguous().numpy())


def payload_dtype(name: str) -> torch.dtype:
    """The wire dtype of run-config 'payload-dtype' ``name``."""
    if name not in PAYLOAD_DTYPES:
        raise PayloadError(f"run-config 'payload-dtype' must be one of {list(PAYLOAD_DTYPES)}, got {name!r}")
    return PAYLOAD_DTYPES[name]


def wire_array(tensor: torch.Tensor, *, field: str, dtype: torch.dtype = torch.float32) -> Array:
    """A float tensor cast to the wire ``dtype`` and serialised.

    A finite value that the cast turns into inf (float16: |x| > 65504) raises
    :class:`PayloadError` naming ``field``: nothing is sent saturated or silently wrong.
    """
    tensor = tensor.detach()
    if tensor.dtype == dtype:
        return tensor_to_array(tensor)
    cast = tensor.to(dtype)
    if not bool(torch.isfinite(cast).all()):
        finite = torch.isfinite(tensor)
        if bool((finite & ~torch.isfinite(cast)).any()):
            largest = float(tensor[finite].abs().max())
            raise PayloadError(
                f"field '{field}': |values| up to {largest:.4g} overflow {_dtype_name(dtype)} (largest finite "
                f"{torch.finfo(dtype).max:.6g}); use run-config 'payload-dtype' = 'float32'"
            )
    return tensor_to_array(cast)


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def array_to_tensor(
    array: Array,
    *,
    field: str,
    dtype: torch.dtype,
    shape: Sequence[int | None],
    max_bytes: int,
    finite: bool = True,
) -> torch.Tensor:
    """Decode and validate one array from a peer.

    ``shape`` entries of ``None`` accept any length in that dimension. The
    declared dtype, shape and byte size are checked before the bytes are parsed;
    the parsed array is checked against them again, then for NaN/inf.
    """
    expected_dtype = str(torch.empty((), dtype=dtype).numpy().dtype)
    if not isinstance(array, Array):
        raise PayloadError(f"field '{field}': expected an Array, got {type(array).__name__}")
    if array.stype != _NUMPY_STYPE:
        raise PayloadError(f"field '{field}': unsupported serialisation {array.stype!r}")
    if array.dtype != expected_dtype:
        raise PayloadError(f"field '{field}': dtype {array.dtype}, expected {expected_dtype}")
    declared = tuple(int(d) for d in array.shape)
    if len(declared) != len(shape) or any(
        want is not None and got != want for got, want in zip(declared, shape, strict=False)
    ):
        raise PayloadError(f"field '{field}': shape {declared}, expected {_shape_str(shape)}")
    if len(array.data) > max_bytes:
        raise PayloadError(
            f"field '{field}': {len(array.data)} bytes exceeds the cap of {max_bytes} bytes "
            "(run-config 'max-payload-mb')"
        )
    try:
        ndarray = array.numpy()
    except Exception as err:  # np.load raises several types on bad bytes
        raise PayloadError(f"field '{field}': undecodable array bytes ({err})") from err
    if ndarray.dtype != np.dtype(expected_dtype) or tuple(ndarray.shape) != declared:
        raise PayloadError(
            f"field '{field}': bytes hold {ndarray.dtype}{tuple(ndarray.shape)}, "
            f"header declared {array.dtype}{declared}"
        )
    tensor = torch.from_numpy(ndarray if ndarray.flags.c_contiguous else ndarray.copy())
    if finite and tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
        hint = (" (float16 on the wire: |values| > 65504 become inf; run-config 'payload-dtype')"
                if dtype == torch.float16 else "")
        raise PayloadError(f"field '{field}': contains NaN or inf{hint}")
    return tensor


def _shape_str(shape: Sequence[int | None]) -> str:
    return "(" + ", ".join("*" if d is None else str(d) for d in shape) + ")"


def require_record(content: RecordDict, name: str, kind: type) -> ArrayRecord | ConfigRecord:
    """Fetch a named record of the given kind, or raise naming what is missing."""
    if name not in content:
        raise PayloadError(f"record '{name}' missing from message")
    record = content[name]
    if not isinstance(record, kind):
        raise PayloadError(f"record '{name}': expected {kind.__name__}")
    return record


def require_array(record: ArrayRecord, key: str, record_name: str) -> Array:
    if key not in record:
        raise PayloadError(f"field '{record_name}.{key}' missing from message")
    return record[key]


def batch_record(index: int) -> str:
    """Name of the ``index``-th batch record in a ``train.step`` reply."""
    return f"{BATCH}.{index}"


def grad_record(index: int) -> str:
    """Name of the ``index``-th gradient record in a ``train.step`` message."""
    return f"{GRAD}.{index}"


def encode_gradients(
    grads: Sequence[torch.Tensor], dtype: torch.dtype = torch.float32
) -> dict[str, ArrayRecord]:
    """dL/dh of consecutive batches, as ``grad.0 .. grad.{m-1}`` records (``dtype`` on the wire)."""
    return {
        grad_record(i): ArrayRecord({"h": wire_array(g, field=f"{grad_record(i)}.h", dtype=dtype)})
        for i, g in enumerate(grads)
    }


def gradient_count(content: RecordDict) -> int:
    """How many consecutive ``grad.0, grad.1, ..`` records ``content`` holds (a gap is left to
    :func:`decode_gradients` to refuse)."""
    count = 0
    while grad_record(count) in content:
        count += 1
    return count


def decode_gradients(
    content: RecordDict, shapes: Sequence[Sequence[int]], *, max_bytes: int, dtype: torch.dtype = torch.float32
) -> list[torch.Tensor]:
    """Validate ``grad.0 .. grad.{m-1}``: one ``dtype`` array of the given shape each, no extra;
    returned as float32."""
    extra = sorted(
        name for name in content
        if name.startswith(f"{GRAD}.") and name not in {grad_record(i) for i in range(len(shapes))}
    )
    if extra:
        raise PayloadError(f"records {extra}: {len(shapes)} gradient(s) expected")
    return [
        array_to_tensor(
            require_array(require_record(content, grad_record(i), ArrayRecord), "h", grad_record(i)),
            field=f"{grad_record(i)}.h",
            dtype=dtype,
            shape=tuple(shape),
            max_bytes=max_bytes,
        ).float()
        for i, shape in enumerate(shapes)
    ]


def encode_batch(
    smashed: torch.Tensor, labels: torch.Tensor, dtype: torch.dtype = torch.float32, record_name: str = BATCH
) -> ArrayRecord:
    """Smashed data ``h`` (``dtype`` on the wire) and its labels: all that leaves a client per batch."""
    return ArrayRecord({
        "h": wire_array(smashed, field=f"{record_name}.h", dtype=dtype), "labels": tensor_to_array(labels),
    })


def decode_batch(
    content: RecordDict,
    *,
    smashed_shape: Sequence[int],
    max_batch: int,
    num_classes: int,
    max_bytes: int,
    record_name: str = BATCH,
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate a client's batch: ``h`` of (B, *smashed_shape) in the wire ``dtype`` (returned
    as float32), int64 labels."""
    record = require_record(content, record_name, ArrayRecord)
    smashed = array_to_tensor(
        require_array(record, "h", record_name),
        field=f"{record_name}.h",
        dtype=dtype,
        shape=(None, *smashed_shape),
        max_bytes=max_bytes,
    ).float()
    labels = array_to_tensor(
        require_array(record, "labels", record_name),
        field=f"{record_name}.labels",
        dtype=torch.int64,
        shape=(smashed.shape[0],),
        max_bytes=max_bytes,
    )
    if not 1 <= smashed.shape[0] <= max_batch:
        raise PayloadError(f"field '{record_name}.h': batch of {smashed.shape[0]}, expected 1..{max_batch}")
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise PayloadError(f"field '{record_name}.labels': values outside 0..{num_classes - 1}")
    return smashed, labels


def decode_batches(
    content: RecordDict,
    count: int,
    *,
    smashed_shape: Sequence[int],
    max_batch: int,
    num_classes: int,
    max_bytes: int,
    dtype: torch.dtype = torch.float32,
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Validate the ``count`` batches of a ``train.step`` reply (``batch.0 ..``), none extra."""
    expected = {batch_record(i) for i in range(count)}
    extra = sorted(name for name in content if name.startswith(f"{BATCH}.") and name not in expected)
    if extra:
        raise PayloadError(f"records {extra}: {count} batch(es) were requested")
    return [
        decode_batch(
            content, smashed_shape=smashed_shape, max_batch=max_batch, num_classes=num_classes,
            max_bytes=max_bytes, record_name=batch_record(i), dtype=dtype,
        )
        for i in range(count)
    ]


def encode_state(state: Mapping[str, torch.Tensor]) -> ArrayRecord:
    """A module's state dict as an ``ArrayRecord`` (keys kept in order)."""
    return ArrayRecord({key: tensor_to_array(value) for key, value in state.items()})


def decode_state(
    record: ArrayRecord,
    reference: Mapping[str, torch.Tensor],
    *,
    field: str,
    max_bytes: int,
) -> dict[str, torch.Tensor]:
    """Validate a state dict against a reference: same keys, dtypes, shapes; finite."""
    missing = [k for k in reference if k not in record]
    extra = [k for k in record if k not in reference]
    if missing or extra:
        raise PayloadError(f"record '{field}': missing keys {missing}, unexpected keys {extra}")
    total = sum(len(record[k].data) for k in reference)
    if total > max_bytes:
        raise PayloadError(f"record '{field}': {total} bytes exceeds the cap of {max_bytes} bytes")
    return {
        key: array_to_tensor(
            record[key],
            field=f"{field}.{key}",
            dtype=ref.dtype,
            shape=tuple(ref.shape),
            max_bytes=max_bytes,
        )
        for key, ref in reference.items()
    }


def content_nbytes(content: RecordDict) -> int:
    """Bytes of tensor payload in a message (what split learning pays for)."""
    return sum(
        record.count_bytes() for record in content.values() if isinstance(record, ArrayRecord)
    )


def encode_moments(total: torch.Tensor, squares: torch.Tensor, count: int) -> ArrayRecord:
    """A BatchNorm layer's input moments (float64 per channel) and the count of values per channel."""
    return ArrayRecord({
        "sum": tensor_to_array(total.double()), "squares": tensor_to_array(squares.double()),
        "count": tensor_to_array(torch.tensor([count], dtype=torch.int64)),
    })


def decode_moments(content: RecordDict, channels: int, *, max_bytes: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Validate ``bn-moments``: float64 (C,) sum and squares, a positive count, and
    squares / count >= (sum / count)^2 up to rounding (a variance cannot be negative)."""
    record = require_record(content, BN_MOMENTS, ArrayRecord)
    total, squares = (
        array_to_tensor(require_array(record, key, BN_MOMENTS), field=f"{BN_MOMENTS}.{key}", dtype=torch.float64,
                        shape=(channels,), max_bytes=max_bytes)
        for key in ("sum", "squares")
    )
    count_t = array_to_tensor(require_array(record, "count", BN_MOMENTS), field=f"{BN_MOMENTS}.count",
                              dtype=torch.int64, shape=(1,), max_bytes=max_bytes)
    count = int(count_t[0])
    if count < 1:
        raise PayloadError(f"field '{BN_MOMENTS}.count': {count}, expected >= 1")
    mean = total / count
    if bool(((squares / count) < mean * mean - 1e-6 * (1 + mean * mean)).any()):
        raise PayloadError(f"field '{BN_MOMENTS}.squares': smaller than sum^2 / count (a negative variance)")
    return total, squares, count


def encode_calibration(batches: Sequence[torch.Tensor], dtype: torch.dtype = torch.float32) -> ArrayRecord:
    """Calibration smashed data as ``h.0 .. h.{m-1}`` (``dtype`` on the wire), one array per
    batch, so each stays within ``max-payload-mb`` however many samples are requested."""
    return ArrayRecord({
        f"h.{i}": wire_array(batch, field=f"{CALIBRATION}.h.{i}", dtype=dtype) for i, batch in enumerate(batches)
    })


def decode_calibration(
    content: RecordDict, *, smashed_shape: Sequence[int], max_batch: int, max_samples: int, max_bytes: int,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Validate ``calibration``: arrays ``h.0 .. h.{m-1}`` (no others), each smashed data
    (B, *smashed_shape) in the wire ``dtype`` with 1 <= B <= max_batch, 1..max_samples
    samples in all; returned as float32."""
    record = require_record(content, CALIBRATION, ArrayRecord)
    names = list(record)
    expected = [f"h.{i}" for i in range(len(names))]
    if not names or sorted(names) != sorted(expected):
        raise PayloadError(f"record '{CALIBRATION}': arrays {sorted(names)}, expected h.0 .. h.{{m-1}}")
    batches = [
        array_to_tensor(require_array(record, name, CALIBRATION), field=f"{CALIBRATION}.{name}",
                        dtype=dtype, shape=(None, *smashed_shape), max_bytes=max_bytes).float()
        for name in expected
    ]
    for name, batch in zip(expected, batches):
        if not 1 <= batch.shape[0] <= max_batch:
            raise PayloadError(f"field '{CALIBRATION}.{name}': {batch.shape[0]} samples, expected 1..{max_batch}")
    smashed = torch.cat(batches)
    if smashed.shape[0] > max_samples:
        raise PayloadError(f"record '{CALIBRATION}': {smashed.shape[0]} samples, expected 1..{max_samples}")
    return smashed
