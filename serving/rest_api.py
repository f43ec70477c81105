"""TF Serving's REST API (the subset mmtower's client uses), on the standard library's HTTP server.

    GET  /v1/models/<name>[/versions/<v>]            model status
    GET  /v1/models/<name>[/versions/<v>]/metadata   signature defs
    POST /v1/models/<name>[/versions/<v>]:predict    {"signature_name", "inputs" (columns) | "instances" (rows)}

Strings travel as JSON strings, or {"b64": ...} for bytes that are not UTF-8;
errors come back as {"error": message} with TF Serving's HTTP status.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
from google.protobuf import json_format

from serving import predict
from serving.errors import ServingError, StatusCode
from serving.models import ModelManager

log = logging.getLogger("mmtower.serve")
READ_TIMEOUT_SECONDS = 10
MAX_CONNECTIONS = 256
BACKLOG = 128
PATH = re.compile(r"^/v1/models/(?P<name>[^/:]+)(?:/versions/(?P<version>\d+))?(?P<rest>/metadata|:predict)?$")


def _decode_strings(value):
    if isinstance(value, dict):
        if set(value) != {"b64"}:
            raise ValueError(f'a string value is a JSON string or {{"b64": ...}}, got an object with keys {sorted(value)}')
        return base64.b64decode(value["b64"], validate=True)
    if isinstance(value, list):
        return [_decode_strings(v) for v in value]
    if isinstance(value, str):
        return value.encode("utf-8")
    raise ValueError(f"expected a string, got {type(value).__name__} {value!r}")


def to_array(name: str, value, dtype) -> np.ndarray:
    """A JSON value -> numpy array of the signature's dtype (INVALID_ARGUMENT if it is not one)."""
    import tensorflow as tf

    try:
        if tf.as_dtype(dtype) == tf.string:
            array = np.array(_decode_strings(value), dtype=object)
        else:
            _check_leaves(value, tf.as_dtype(dtype))
            array = np.array(value, dtype=tf.as_dtype(dtype).as_numpy_dtype)
    except (ValueError, TypeError, OverflowError, base64.binascii.Error) as error:
        raise ServingError(StatusCode.INVALID_ARGUMENT, f"input {name!r}: not a {tf.as_dtype(dtype).name} tensor: {error}") from error
    if array.dtype == object and any(isinstance(v, (list, np.ndarray)) for v in array.flat):
        raise ServingError(StatusCode.INVALID_ARGUMENT, f"input {name!r}: ragged lists; every row must have the same length")
    return array


def _check_leaves(value, dtype) -> None:
    """JSON leaves must be of the input's kind: numpy would turn "yes" into True and 1.5 into 1."""
    if isinstance(value, list):
        for v in value:
            _check_leaves(v, dtype)
        return
    if dtype.is_bool:
        ok = isinstance(value, bool)
    elif dtype.is_integer:
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok:
        raise ValueError(f"{value!r} is not a {dtype.name}")


def to_json(array: np.ndarray):
    if array.dtype == object:

        def one(v):
            try:
                return v.decode("utf-8")
            except UnicodeDecodeError:
                return {"b64": base64.b64encode(v).decode("ascii")}

        return np.vectorize(one, otypes=[object])(array).tolist() if array.size else array.tolist()
    return array.tolist()


def parse_predict_body(body: dict, signature) -> dict[str, np.ndarray]:
    """TF Serving's columnar ("inputs") or row ("instances") request -> {input name: array}."""
    if not isinstance(body, dict) or ("inputs" in body) == ("instances" in body):
        raise ServingError(StatusCode.INVALID_ARGUMENT, 'the request body is a JSON object with exactly one of "inputs" or "instances"')
    names = list(signature.inputs)
    if "inputs" in body:
        columns = body["inputs"]
        if not isinstance(columns, dict):
            if len(names) != 1:
                raise ServingError(StatusCode.INVALID_ARGUMENT, f'"inputs" must be an object naming the inputs {names}')
            columns = {names[0]: columns}
    else:
        rows = body["instances"]
        if not isinstance(rows, list) or not rows:
            raise ServingError(StatusCode.INVALID_ARGUMENT, '"instances" must be a non-empty list')
        if all(isinstance(row, dict) and not set(row) <= {"b64"} for row in rows):
            keys = set(rows[0])
            if any(set(row) != keys for row in rows):
                raise ServingError(StatusCode.INVALID_ARGUMENT, '"instances": every instance must name the same inputs')
            columns = {key: [row[key] for row in rows] for key in keys}
        elif len(names) == 1:
            columns = {names[0]: rows}
        else:
            raise ServingError(StatusCode.INVALID_ARGUMENT, f'"instances" must be objects naming the inputs {names}')
    unknown = sorted(set(columns) - set(names))
    if unknown:
        raise ServingError(StatusCode.INVALID_ARGUMENT, f"unknown inputs {unknown}; the signature takes {names}")
    return {name: to_array(name, value, signature.inputs[name].dtype) for name, value in columns.items()}


def predict_response(body: dict, outputs: dict[str, np.ndarray]) -> dict:
    if "inputs" in body:
        return {"outputs": {name: to_json(value) for name, value in outputs.items()}}
    columns = {name: to_json(value) for name, value in outputs.items()}
    rows = len(next(iter(outputs.values()))) if outputs else 0
    if len(columns) == 1:
        return {"predictions": next(iter(columns.values()))}
    return {"predictions": [{name: values[i] for name, values in columns.items()} for i in range(rows)]}


def make_handler(
    models: ModelManager, limits: predict.Limits, max_body_bytes: int, read_timeout: float = READ_TIMEOUT_SECONDS, batcher=None
):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "mmtower-serve"
        timeout = read_timeout  # socket timeout: an idle keep-alive connection or a stalled body is closed

        def log_message(self, format, *args):  # noqa: A002 - the standard library's name
            log.debug("rest: " + format, *args)

        def _send(self, status: int, payload: dict) -> None:
            data = json.dumps(payload).encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _route(self):
            match = PATH.match(self.path.split("?", 1)[0])
            if not match:
                raise ServingError(
                    StatusCode.NOT_FOUND, f"no such endpoint {self.path!r}; see /v1/models/<name>[/versions/<v>][:predict|/metadata]"
                )
            version = int(match["version"]) if match["version"] else None
            return match["name"], version, match["rest"] or ""

        def _handle(self, method: str) -> None:
            try:
                name, version, action = self._route()
                if method == "GET" and action == "":
                    return self._send(200, {"model_version_status": [_status_json(s) for s in models.status(name, version)]})
                if method == "GET" and action == "/metadata":
                    return self._send(200, _metadata_json(models.get(name, version)))
                if method == "POST" and action == ":predict":
                    return self._send(200, self._predict(name, version))
                raise ServingError(StatusCode.NOT_FOUND, f"{method} {self.path} is not an endpoint")
            except ServingError as error:
                self._send(error.http_status, {"error": error.message})
            except (TimeoutError, ConnectionError):  # a client that stalls or leaves: drop the connection, quietly
                self.close_connection = True
            except Exception as error:  # never let one request take the server down
                log.exception("REST request failed")
                self._send(500, {"error": f"{type(error).__name__}: {error}"})

        def _predict(self, name: str, version: int | None) -> dict:
            length = self.headers.get("Content-Length")
            if length is None or not length.isdigit():
                raise ServingError(StatusCode.INVALID_ARGUMENT, "a :predict request needs a Content-Length")
            if int(length) > max_body_bytes:
                self.close_connection = True  # the body is not read
                raise ServingError(StatusCode.RESOURCE_EXHAUSTED, f"request body of {length} bytes exceeds the limit of {max_body_bytes}")
            data = self.rfile.read(int(length))  # a body shorter than its Content-Length times out (READ_TIMEOUT_SECONDS)
            try:
                body = json.loads(data or b"null")
            except (ValueError, UnicodeDecodeError) as error:
                raise ServingError(StatusCode.INVALID_ARGUMENT, f"the request body is not JSON: {error}") from error
            except RecursionError:
                raise ServingError(StatusCode.INVALID_ARGUMENT, "the request body is JSON nested too deeply") from None
            servable = models.get(name, version)
            signature_name = body.get("signature_name", "") if isinstance(body, dict) else ""
            if not isinstance(signature_name, str):
                raise ServingError(StatusCode.INVALID_ARGUMENT, '"signature_name" must be a string')
            signature_name, signature = predict.signature_def(servable, signature_name)
            inputs = parse_predict_body(body, signature)
            _, outputs = predict.run(servable, signature_name, inputs, limits=limits, batcher=batcher)
            return predict_response(body, outputs)

        def do_GET(self):  # noqa: N802 - BaseHTTPRequestHandler's name
            self._handle("GET")

        def do_POST(self):  # noqa: N802
            self._handle("POST")

    return Handler


def _status_json(state) -> dict:
    return {
        "version": str(state.version),
        "state": state.state,
        "status": {"error_code": "UNKNOWN" if state.error else "OK", "error_message": state.error},
    }


def _metadata_json(servable) -> dict:
    from tensorflow_serving.apis import get_model_metadata_pb2

    signatures = get_model_metadata_pb2.SignatureDefMap()
    for name, signature in servable.signature_defs.items():
        signatures.signature_def[name].CopyFrom(signature)
    return {
        "model_spec": {"name": servable.name, "signature_name": "", "version": str(servable.version)},
        # TF Serving writes the proto field names (signature_def, tensor_shape, method_name), not camelCase
        "metadata": {"signature_def": json_format.MessageToDict(signatures, preserving_proto_field_name=True)},
    }


class BoundedHTTPServer(ThreadingHTTPServer):
    """ThreadingHTTPServer with a listen backlog of BACKLOG and at most `max_connections` open connections
    (one thread each): a connection over the cap gets 503 and is closed at once, not a thread."""

    request_queue_size = BACKLOG
    daemon_threads = True

    def __init__(self, address, handler, max_connections: int):
        super().__init__(address, handler)
        self._slots = threading.BoundedSemaphore(max_connections)
        self.max_connections = max_connections

    def process_request(self, request, client_address):
        if not self._slots.acquire(blocking=False):
            try:
                body = json.dumps({"error": f"the server holds its limit of {self.max_connections} connections; retry later"}).encode()
                request.sendall(
                    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nConnection: close\r\n"
                    + b"Content-Length: %d\r\n\r\n" % len(body)
                    + body
                )
            except OSError:
                pass
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def handle_error(self, request, client_address):
        error = sys.exc_info()[1]
        if isinstance(error, (ConnectionError, TimeoutError)):  # a client that left or stalled: not the server's fault
            log.debug("rest: connection from %s ended: %r", client_address, error)
            return
        log.exception("rest: unexpected error on a connection from %s", client_address)


def make_server(
    host: str,
    port: int,
    models: ModelManager,
    limits: predict.Limits,
    max_body_bytes: int,
    max_connections: int = MAX_CONNECTIONS,
    read_timeout: float = READ_TIMEOUT_SECONDS,
    batcher=None,
) -> ThreadingHTTPServer:
    return BoundedHTTPServer((host, port), make_handler(models, limits, max_body_bytes, read_timeout, batcher), max_connections)
