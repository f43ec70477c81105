"""Clients of TF Serving's API: gRPC (tensorflow-serving-api stubs) and REST.

Both take and return {name: numpy array}, so callers do not care which one
they hold; both work against the `tensorflow/serving` binary and `mmtower serve`.
"""

from __future__ import annotations

import json

import numpy as np

from serving.errors import ServingError, StatusCode

GRPC_PORT = 8500
REST_PORT = 8501


class GrpcClient:
    """PredictionService.Predict / GetModelMetadata and ModelService.GetModelStatus over one channel.

    Args:
      target: "host:port" of the gRPC endpoint.
      timeout: seconds per call.
      max_message_mib: largest message sent or received.
    """

    def __init__(self, target: str, timeout: float = 10.0, max_message_mib: int = 16):
        import grpc
        from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

        limit = max_message_mib << 20
        self.channel = grpc.insecure_channel(
            target, options=[("grpc.max_send_message_length", limit), ("grpc.max_receive_message_length", limit)]
        )
        self.prediction = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)
        self.model_service = model_service_pb2_grpc.ModelServiceStub(self.channel)
        self.timeout = timeout
        self.target = target

    @staticmethod
    def _spec(spec, model: str, version: int | None, signature: str | None = None) -> None:
        spec.name = model
        if version is not None:
            spec.version.value = version
        if signature:
            spec.signature_name = signature

    def _call(self, method, request):
        import grpc

        try:
            return method(request, timeout=self.timeout)
        except grpc.RpcError as error:
            raise ServingError(error.code(), f"{self.target}: {error.code().name}: {error.details()}") from error

    def predict(
        self, model: str, inputs: dict[str, np.ndarray], signature: str = "serving_default", version: int | None = None, output_filter=()
    ) -> dict[str, np.ndarray]:
        from tensorflow_serving.apis import predict_pb2

        from serving import tensors

        request = predict_pb2.PredictRequest()
        self._spec(request.model_spec, model, version, signature)
        for name, value in inputs.items():
            request.inputs[name].CopyFrom(tensors.to_proto(value))
        request.output_filter.extend(output_filter)
        response = self._call(self.prediction.Predict, request)
        return {name: tensors.to_array(proto) for name, proto in response.outputs.items()}

    def metadata(self, model: str, version: int | None = None) -> dict:
        """Signature name -> SignatureDef proto."""
        from tensorflow_serving.apis import get_model_metadata_pb2

        request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        self._spec(request.model_spec, model, version)
        response = self._call(self.prediction.GetModelMetadata, request)
        signatures = get_model_metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(signatures)
        return dict(signatures.signature_def)

    def status(self, model: str, version: int | None = None) -> list[tuple[int, str]]:
        """(version, state name) of each known version."""
        from tensorflow_serving.apis import get_model_status_pb2

        request = get_model_status_pb2.GetModelStatusRequest()
        self._spec(request.model_spec, model, version)
        response = self._call(self.model_service.GetModelStatus, request)
        states = get_model_status_pb2.ModelVersionStatus.State
        return [(s.version, states.Name(s.state)) for s in response.model_version_status]

    def close(self) -> None:
        self.channel.close()


class RestClient:
    """TF Serving's REST API (`/v1/models/...`) with columnar ("inputs") requests.

    Args:
      base_url: e.g. "http://localhost:8501".
      timeout: seconds per call.
    """

    def __init__(self, base_url: str, timeout: float = 10.0):
        import requests

        self.base_url = base_url.rstrip("/")
        self.session = requests.Session()
        self.timeout = timeout

    def _url(self, model: str, version: int | None, suffix: str = "") -> str:
        return f"{self.base_url}/v1/models/{model}" + (f"/versions/{version}" if version is not None else "") + suffix

    def _json(self, response) -> dict:
        try:
            payload = response.json()
        except ValueError:
            payload = {"error": response.text}
        if response.status_code != 200:
            code = {400: StatusCode.INVALID_ARGUMENT, 404: StatusCode.NOT_FOUND, 413: StatusCode.RESOURCE_EXHAUSTED}.get(
                response.status_code, StatusCode.INTERNAL
            )
            raise ServingError(code, f"{response.url}: HTTP {response.status_code}: {payload.get('error', payload)}")
        return payload

    def predict(
        self, model: str, inputs: dict[str, np.ndarray], signature: str = "serving_default", version: int | None = None
    ) -> dict[str, np.ndarray]:
        def jsonable(value: np.ndarray):
            if value.dtype == object or value.dtype.kind == "S":
                return (
                    np.vectorize(lambda v: v.decode("utf-8") if isinstance(v, bytes) else v, otypes=[object])(value).tolist()
                    if value.size
                    else value.tolist()
                )
            return value.tolist()

        body = {"signature_name": signature, "inputs": {name: jsonable(np.asarray(v)) for name, v in inputs.items()}}
        response = self.session.post(self._url(model, version, ":predict"), data=json.dumps(body), timeout=self.timeout)
        outputs = self._json(response)["outputs"]
        return {name: _from_json(value) for name, value in outputs.items()}

    def status(self, model: str, version: int | None = None) -> list[tuple[int, str]]:
        payload = self._json(self.session.get(self._url(model, version), timeout=self.timeout))
        return [(int(s["version"]), s["state"]) for s in payload["model_version_status"]]

    def metadata(self, model: str, version: int | None = None) -> dict:
        return self._json(self.session.get(self._url(model, version, "/metadata"), timeout=self.timeout))["metadata"]["signature_def"][
            "signature_def"
        ]

    def close(self) -> None:
        self.session.close()


def _from_json(value) -> np.ndarray:
    array = np.array(value)
    if array.dtype.kind == "U":  # strings come back as bytes, as from gRPC
        return np.vectorize(lambda v: v.encode("utf-8"), otypes=[object])(array)
    return array


def connect(server: str, protocol: str = "grpc"):
    """A client for "host:port" (gRPC) or "http://host:port" / protocol="rest" (REST)."""
    if server.startswith("http://") or server.startswith("https://"):
        return RestClient(server)
    if protocol == "rest":
        return RestClient(f"http://{server}")
    return GrpcClient(server)
