"""Runs one Predict request on a servable: input checks with TF Serving's status codes, then the signature.

Shared by the gRPC and REST front ends, which only convert their wire formats
to and from {input name: numpy array}.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from serving.errors import ServingError, StatusCode
from serving.models import Servable
from towers import features as F
from towers import privacy

DEFAULT_SIGNATURE = "serving_default"


@dataclass(frozen=True)
class Limits:
    """What one request may ask for, and what the edge does to it.

    Attributes:
      max_batch: largest leading dimension of any input.
      max_elements: largest number of values in one input tensor.
      pseudonym_key: the serving edge pseudonymises `user_id` inputs with this key (towers.privacy) before the
        model sees them, as the dataset build did; a value that is already a pseudonym passes unchanged. None: as sent.
    """

    max_batch: int = 1024
    max_elements: int = 1 << 20
    pseudonym_key: bytes | None = field(default=None, repr=False)


def pseudonymised(inputs: dict[str, np.ndarray], key: bytes) -> dict[str, np.ndarray]:
    """`inputs` with every raw `user_id` value replaced by its pseudonym (towers.privacy)."""
    if F.USER_ID not in inputs:
        return inputs
    values = inputs[F.USER_ID]

    def edge(value):
        text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
        return (text if privacy.is_pseudonym(text) else privacy.pseudonym(key, text)).encode()

    return {**inputs, F.USER_ID: np.vectorize(edge, otypes=[object])(values) if values.size else values}


def _dtype_name(dtype) -> str:
    import tensorflow as tf

    return tf.as_dtype(dtype).name


def signature_def(servable: Servable, signature_name: str):
    name = signature_name or DEFAULT_SIGNATURE
    if name not in servable.signature_defs:
        raise ServingError(
            StatusCode.NOT_FOUND,
            f"Serving signature key {name!r} not found in {servable.name} version {servable.version} "
            f"(signatures: {', '.join(sorted(servable.signature_defs))})",
        )
    return name, servable.signature_defs[name]


def check_inputs(signature_name: str, signature, inputs: dict, limits: Limits) -> None:
    """Names, dtypes, ranks, fixed dimensions and sizes of `inputs` against the SignatureDef (INVALID_ARGUMENT)."""
    import tensorflow as tf

    expected = set(signature.inputs)
    missing, unknown = sorted(expected - set(inputs)), sorted(set(inputs) - expected)
    if missing or unknown:
        raise ServingError(
            StatusCode.INVALID_ARGUMENT,
            f"signature {signature_name!r} takes inputs {sorted(expected)}"
            + (f"; missing: {missing}" if missing else "")
            + (f"; unknown: {unknown}" if unknown else ""),
        )
    for name, info in signature.inputs.items():
        value = inputs[name]
        want = tf.as_dtype(info.dtype)
        got = tf.string if value.dtype == object or value.dtype.kind in "SU" else tf.as_dtype(value.dtype)
        if got != want:
            raise ServingError(StatusCode.INVALID_ARGUMENT, f"input {name!r}: expects {want.name}, got {got.name}")
        if not info.tensor_shape.unknown_rank:
            dims = [d.size for d in info.tensor_shape.dim]
            if value.ndim != len(dims) or any(d >= 0 and d != v for d, v in zip(dims, value.shape)):
                shape = [None if d < 0 else d for d in dims]
                raise ServingError(StatusCode.INVALID_ARGUMENT, f"input {name!r}: expects shape {shape}, got {list(value.shape)}")
        if value.ndim and value.shape[0] > limits.max_batch:
            raise ServingError(
                StatusCode.INVALID_ARGUMENT, f"input {name!r}: batch of {value.shape[0]} exceeds the limit of {limits.max_batch}"
            )
        if value.size > limits.max_elements:
            raise ServingError(
                StatusCode.INVALID_ARGUMENT, f"input {name!r}: {value.size} values exceed the limit of {limits.max_elements}"
            )


def run(
    servable: Servable,
    signature_name: str,
    inputs: dict[str, np.ndarray],
    output_filter=(),
    limits: Limits = Limits(),
    batcher=None,
) -> tuple[str, dict[str, np.ndarray]]:
    """-> (signature name, {output name: array}); ServingError for anything the request got wrong.

    `batcher`: a serving.batching.Batcher that runs this request together with concurrent ones."""
    name, signature = signature_def(servable, signature_name)
    check_inputs(name, signature, inputs, limits)
    if limits.pseudonym_key is not None:
        inputs = pseudonymised(inputs, limits.pseudonym_key)
    unknown = sorted(set(output_filter) - set(signature.outputs))
    if unknown:
        raise ServingError(
            StatusCode.INVALID_ARGUMENT, f"output_filter {unknown} not among the outputs of {name!r}: {sorted(signature.outputs)}"
        )
    if batcher is not None:
        outputs = batcher.call(servable, name, signature, inputs)
        return name, {key: outputs[key] for key in (output_filter or outputs)}
    return name, call(servable, name, signature, inputs, output_filter)


def call(servable: Servable, name: str, signature, inputs: dict[str, np.ndarray], output_filter=()) -> dict[str, np.ndarray]:
    """Runs signature `name` on checked inputs -> {output name: array} (those in `output_filter`, or all)."""
    import tensorflow as tf

    function = servable.model.signatures[name]
    try:
        outputs = function(**{key: tf.constant(value, dtype=tf.as_dtype(signature.inputs[key].dtype)) for key, value in inputs.items()})
    except (tf.errors.InvalidArgumentError, tf.errors.OutOfRangeError, ValueError, TypeError) as error:
        # e.g. inputs whose batch sizes disagree: the graph rejects them
        raise ServingError(StatusCode.INVALID_ARGUMENT, f"{name}: {_first_line(error)}") from error
    except tf.errors.OpError as error:
        raise ServingError(StatusCode.INTERNAL, f"{name}: {_first_line(error)}") from error
    return {key: outputs[key].numpy() for key in (output_filter or outputs.keys())}


def _first_line(error: Exception) -> str:
    """The error's cause in one line. For TensorFlow's "Graph execution error:", the op's own message: the
    first line after it that is neither the "Detected at node" header nor the (indented) Python stack."""
    text = (getattr(error, "message", None) or str(error)).strip()
    lines = text.splitlines()
    if not lines:
        return type(error).__name__
    if lines[0].startswith("Graph execution error"):
        causes = [
            line
            for line in lines[1:]
            if line.strip() and not line[0].isspace() and not line.startswith(("Detected at node", "<stack traces unavailable>"))
        ]
        if causes:
            return causes[0][:500]
    return lines[0][:500]
