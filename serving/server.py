"""`mmtower serve`: a development stand-in for TF Serving, speaking the same gRPC and REST API.

Production runs the `tensorflow/serving` image (deploy/) on the same
models.config and model directories. This server implements what mmtower's
client uses (Predict, GetModelMetadata, GetModelStatus; REST :predict,
status, metadata) with TF Serving's protos and status codes, serves the newest
version of each model and swaps atomically when the Pusher writes a new one.
It binds to loopback unless told otherwise.
"""

from __future__ import annotations

import logging
import threading
from concurrent import futures
from dataclasses import dataclass

import grpc

from serving import batching, grpc_api, predict, rest_api
from serving import config as model_config
from serving.models import ModelManager

log = logging.getLogger("mmtower.serve")
MIB = 1 << 20


@dataclass(frozen=True)
class ServerOptions:
    """How the server listens and what it accepts.

    Attributes:
      host: interface to bind (loopback by default; 0.0.0.0 to expose it).
      grpc_port: TF Serving's gRPC port (8500); 0 picks a free one.
      rest_port: TF Serving's REST port (8501); 0 picks a free one; None: no REST.
      poll_seconds: how often model base paths are scanned for new versions.
      max_message_mib: largest gRPC message / REST body accepted (and sent).
      threads: concurrent requests served.
      limits: per-request batch and tensor size limits.
      batching: run concurrent Predict requests in batches with these parameters (serving.batching; TF
        Serving's --enable_batching --batching_parameters_file); None: each request runs on its own.
    """

    host: str = "127.0.0.1"
    grpc_port: int = 8500
    rest_port: int | None = 8501
    poll_seconds: float = 1.0
    max_message_mib: int = 16
    threads: int = 16
    limits: predict.Limits = predict.Limits()
    batching: batching.BatchingParameters | None = None


def load_custom_ops() -> list[str]:
    """Registers the TF ops a ScaNN-indexed model needs (tf-serving-scann's role), when scann is installed."""
    from towers import scann_index

    return ["scann"] if scann_index.load_ops() else []


class Server:
    """gRPC + REST front ends over one ModelManager. `start()` returns once both listen."""

    def __init__(self, config_path: str, options: ServerOptions = ServerOptions()):
        self.config_path = config_path
        self.options = options
        self.models = ModelManager(model_config.read(config_path), options.poll_seconds)
        self._grpc = None
        self._rest = None
        self.batcher = None
        self.grpc_port = None
        self.rest_port = None

    def start(self) -> Server:
        ops = load_custom_ops()
        if ops:
            log.info("custom ops loaded: %s", ", ".join(ops))
        self.models.start()
        if self.options.batching is not None:
            self.batcher = batching.Batcher(self.options.batching, predict.call)
        limit = self.options.max_message_mib * MIB
        self._grpc = grpc.server(
            futures.ThreadPoolExecutor(max_workers=self.options.threads, thread_name_prefix="grpc"),
            options=[("grpc.max_receive_message_length", limit), ("grpc.max_send_message_length", limit)],
        )
        grpc_api.add_services(self._grpc, self.models, self.options.limits, self.batcher)
        self.grpc_port = self._grpc.add_insecure_port(f"{self.options.host}:{self.options.grpc_port}")
        if self.grpc_port == 0:
            raise OSError(f"cannot listen on {self.options.host}:{self.options.grpc_port} (in use?)")
        self._grpc.start()
        if self.options.rest_port is not None:
            self._rest = rest_api.make_server(
                self.options.host, self.options.rest_port, self.models, self.options.limits, limit, batcher=self.batcher
            )
            self.rest_port = self._rest.server_address[1]
            threading.Thread(target=self._rest.serve_forever, name="rest", daemon=True).start()
        return self

    def stop(self) -> None:
        if self._rest is not None:
            self._rest.shutdown()
            self._rest.server_close()
        if self._grpc is not None:
            self._grpc.stop(grace=1).wait()
        if self.batcher is not None:
            self.batcher.stop()
        self.models.stop()

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def main(config_path: str, options: ServerOptions) -> int:
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(message)s"))
    log.addHandler(handler)  # absl may own the root logger: mmtower.serve logs on its own
    log.setLevel(logging.INFO)
    log.propagate = False
    server = Server(config_path, options).start()
    served = {name: server.models.status(name) for name in server.models.model_names}
    for name, states in served.items():
        versions = ", ".join(f"{s.version} {s.state}" for s in states) or "no version yet (waiting for one)"
        print(f"  {name}: {versions}", flush=True)
    if options.batching is not None:
        print("  batching: " + options.batching.to_text().replace("\n", "; ").rstrip("; "), flush=True)
    rest = f", REST on http://{options.host}:{server.rest_port}" if server.rest_port else ""
    print(f"mmtower serve: gRPC on {options.host}:{server.grpc_port}{rest} (models.config: {config_path}); Ctrl-C stops", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0
