"""Server-side request batching, as TF Serving's `--enable_batching` with a `--batching_parameters_file`.

Concurrent Predict requests for the same model version and signature, whose
inputs agree in dtype and in every dimension after the first, are
concatenated along the batch dimension, run as one call, and split back:
the item table is read once for many queries, which is where a brute-force
`recommend` spends its time. The parameters are TF Serving's
(BatchingParameters, text format):

  max_batch_size        largest batch one call runs (requests are never split);
  batch_timeout_micros  how long a batch waits for more requests once one is
                        queued; 0 (the default here, and TF Serving's advice on
                        CPU) takes only what is already queued, so a lone request
                        waits for nothing and batches form under load;
  num_batch_threads     calls run at once;
  max_enqueued_batches  queued requests beyond this many batches are refused
                        with UNAVAILABLE (back-pressure instead of unbounded queues).

Unlike TF Serving, requests whose shapes differ are not padded (TF Serving
pads with each tensor's first value, which would change a history): they
run in batches of their own. mmtower's clients send the history padded to
towers.features.HISTORY_LENGTH with '' (the model's padding), so their
requests always batch together, on this server and on TF Serving.

One request the batched call rejects never fails the others: the batch is
then run request by request and each gets its own answer.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass, fields

import numpy as np

from serving.errors import ServingError, StatusCode


@dataclass(frozen=True)
class BatchingParameters:
    """TF Serving's BatchingParameters (the fields this server honours); see the module docstring."""

    max_batch_size: int = 32
    batch_timeout_micros: int = 0
    num_batch_threads: int = 2
    max_enqueued_batches: int = 100

    def __post_init__(self):
        for field in fields(self):
            value = getattr(self, field.name)
            minimum = 0 if field.name == "batch_timeout_micros" else 1
            if not isinstance(value, int) or value < minimum:
                raise ValueError(f"batching parameter {field.name} must be an integer >= {minimum}, got {value!r}")

    def to_text(self) -> str:
        """TF Serving's text format (what --batching_parameters_file reads)."""
        return "".join(f"{field.name} {{ value: {getattr(self, field.name)} }}\n" for field in fields(self))


_ENTRY = re.compile(r"(\w+)\s*(?:\{([^{}]*)\}|:\s*(\S+))")
_VALUE = re.compile(r"\s*value\s*:\s*(-?\d+)\s*")
_IGNORED = {"allowed_batch_sizes", "pad_variable_length_inputs", "thread_pool_name", "enable_large_batch_splitting"}


def parse(text: str, source: str = "batching parameters") -> BatchingParameters:
    """TF Serving's text format -> BatchingParameters; ValueError naming the file and the field.

    The fields TF Serving has and this server does not use (allowed_batch_sizes, pad_variable_length_inputs,
    thread_pool_name, enable_large_batch_splitting) are accepted and ignored, so one file serves both."""
    known = {field.name for field in fields(BatchingParameters)}
    body = re.sub(r"#[^\n]*", "", text)
    values = {}
    for match in _ENTRY.finditer(body):
        name, braces = match.group(1), match.group(2)
        if name in _IGNORED:
            continue
        if name not in known:
            raise ValueError(f"{source}: unknown batching parameter {name!r} (known: {', '.join(sorted(known))})")
        value = _VALUE.fullmatch(braces or "")
        if value is None:
            raise ValueError(f"{source}: {name} must read '{name} {{ value: N }}', got {match.group(0)!r}")
        values[name] = int(value.group(1))
    rest = _ENTRY.sub("", body).strip()
    if rest:
        raise ValueError(f"{source}: cannot read {rest.splitlines()[0][:80]!r} (expected e.g. 'max_batch_size {{ value: 32 }}')")
    try:
        return BatchingParameters(**values)
    except ValueError as error:
        raise ValueError(f"{source}: {error}") from None


def read(path: str) -> BatchingParameters:
    with open(path, encoding="utf-8") as f:
        return parse(f.read(), path)


class _Task:
    __slots__ = ("key", "servable", "name", "signature", "inputs", "size", "done", "outputs", "error")

    def __init__(self, servable, name: str, signature, inputs: dict, size: int):
        shapes = tuple(sorted((input_name, value.dtype.str, value.shape[1:]) for input_name, value in inputs.items()))
        self.key = (id(servable), name, shapes)  # tasks with one key run in one call
        self.servable, self.name, self.signature, self.inputs, self.size = servable, name, signature, inputs, size
        self.done = threading.Event()
        self.outputs, self.error = None, None

    def finish(self, outputs=None, error=None):
        self.outputs, self.error = outputs, error
        self.done.set()


def batch_size(inputs: dict[str, np.ndarray]) -> int | None:
    """The common leading dimension of every input, or None when they do not share one (not batchable)."""
    sizes = {value.shape[0] if value.ndim else None for value in inputs.values()}
    return sizes.pop() if len(sizes) == 1 and None not in sizes else None


def is_batched(output_info) -> bool:
    """Whether a SignatureDef output has a free leading (batch) dimension."""
    shape = output_info.tensor_shape
    return not shape.unknown_rank and len(shape.dim) > 0 and shape.dim[0].size < 0


class Batcher:
    """Runs `call(servable, signature_name, signature, inputs) -> {output: array}` on batches of requests."""

    def __init__(self, params: BatchingParameters, call):
        self.params = params
        self._call = call
        self._timeout = params.batch_timeout_micros / 1e6
        self._capacity = params.max_enqueued_batches * params.max_batch_size
        self._pending: list[_Task] = []
        self._cond = threading.Condition()
        self._stopped = False
        self.batches = 0  # calls run (for benchmarks and tests)
        self.requests = 0
        self._threads = [threading.Thread(target=self._loop, name=f"batch-{i}", daemon=True) for i in range(params.num_batch_threads)]
        for thread in self._threads:
            thread.start()

    def call(self, servable, signature_name: str, signature, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Blocks until this request's outputs are ready; raises the ServingError its own call would raise."""
        size = batch_size(inputs)
        if size is None or size == 0 or size > self.params.max_batch_size:
            return self._call(servable, signature_name, signature, inputs)  # the graph gives such requests their answer
        task = _Task(servable, signature_name, signature, inputs, size)
        with self._cond:
            if self._stopped:
                raise ServingError(StatusCode.UNAVAILABLE, "the server is stopping")
            if len(self._pending) >= self._capacity:
                raise ServingError(
                    StatusCode.UNAVAILABLE,
                    f"the batch queue is full ({len(self._pending)} requests waiting = max_enqueued_batches "
                    f"{self.params.max_enqueued_batches} x max_batch_size {self.params.max_batch_size}); retry later",
                )
            self._pending.append(task)
            self._cond.notify_all()
        task.done.wait()
        if task.error is not None:
            raise task.error
        return task.outputs

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        for thread in self._threads:
            thread.join(timeout=10)

    def _take(self, key, batch: list[_Task], size: int) -> int:
        """Moves queued tasks with `key` that still fit into `batch`, oldest first -> the new size."""
        kept = []
        for task in self._pending:
            if task.key == key and size + task.size <= self.params.max_batch_size:
                batch.append(task)
                size += task.size
            else:
                kept.append(task)
        self._pending[:] = kept
        return size

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._stopped:
                    self._cond.wait()
                if not self._pending:
                    return
                first = self._pending.pop(0)
                batch, size = [first], first.size
                deadline = time.monotonic() + self._timeout
                while True:
                    size = self._take(first.key, batch, size)
                    remaining = deadline - time.monotonic()
                    if size >= self.params.max_batch_size or remaining <= 0:
                        break
                    self._cond.wait(remaining)
            self._run(batch)

    def _run(self, batch: list[_Task]) -> None:
        first = batch[0]
        self.batches += 1
        self.requests += len(batch)
        try:
            if len(batch) == 1:
                first.finish(self._call(first.servable, first.name, first.signature, first.inputs))
                return
            inputs = {name: np.concatenate([task.inputs[name] for task in batch]) for name in first.inputs}
            outputs = self._call(first.servable, first.name, first.signature, inputs)
            parts = self._split(first.signature, outputs, [task.size for task in batch])
        except Exception as error:  # noqa: BLE001 - delivered to the request(s), never raised in this thread
            if len(batch) == 1:
                first.finish(error=_as_serving_error(error))
                return
            parts = None
        if parts is None:  # the batched call failed or its outputs do not split: each request on its own
            for task in batch:
                try:
                    task.finish(self._call(task.servable, task.name, task.signature, task.inputs))
                except Exception as error:  # noqa: BLE001
                    task.finish(error=_as_serving_error(error))
            return
        for task, outputs in zip(batch, parts):
            task.finish(outputs)

    @staticmethod
    def _split(signature, outputs: dict[str, np.ndarray], sizes: list[int]) -> list[dict] | None:
        total, bounds = sum(sizes), np.cumsum(sizes)[:-1]
        parts = [{} for _ in sizes]
        for name, value in outputs.items():
            info = signature.outputs.get(name)
            if info is not None and is_batched(info):
                if value.ndim == 0 or value.shape[0] != total:
                    return None
                for part, piece in zip(parts, np.split(value, bounds)):
                    part[name] = piece
            else:
                for part in parts:
                    part[name] = value
        return parts


def _as_serving_error(error: Exception) -> ServingError:
    if isinstance(error, ServingError):
        return error
    return ServingError(StatusCode.INTERNAL, f"{type(error).__name__}: {error}")
