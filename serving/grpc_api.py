"""TF Serving's gRPC API (the subset mmtower's client uses): PredictionService.Predict and
GetModelMetadata, ModelService.GetModelStatus, with TF Serving's request and response protos."""

from __future__ import annotations

import logging

import grpc
import numpy as np
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from serving import predict, tensors
from serving.errors import ServingError, StatusCode
from serving.models import ModelManager

log = logging.getLogger("mmtower.serve")
SIGNATURE_DEF_FIELD = "signature_def"


def to_array(name: str, proto, max_elements: int | None = None) -> np.ndarray:
    try:
        return tensors.to_array(proto, max_elements)
    except tensors.TensorTooLarge as error:
        raise ServingError(StatusCode.INVALID_ARGUMENT, f"input {name!r}: {error}") from error
    except Exception as error:  # malformed TensorProto: bad dtype, content size not matching the shape, ...
        raise ServingError(StatusCode.INVALID_ARGUMENT, f"input {name!r} is not a valid TensorProto: {error}") from error


def _version(model_spec) -> int | None:
    if model_spec.HasField("version"):
        return model_spec.version.value
    if model_spec.version_label:
        raise ServingError(
            StatusCode.INVALID_ARGUMENT,
            f"version labels are not supported (asked for {model_spec.version_label!r}); ask for a version number",
        )
    return None


def _abort(context, error: ServingError):
    context.abort(error.code, error.message)


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, models: ModelManager, limits: predict.Limits, batcher=None):
        self.models = models
        self.limits = limits
        self.batcher = batcher

    def Predict(self, request, context):
        try:
            servable = self.models.get(request.model_spec.name, _version(request.model_spec))
            inputs = {name: to_array(name, proto, self.limits.max_elements) for name, proto in request.inputs.items()}
            signature, outputs = predict.run(
                servable, request.model_spec.signature_name, inputs, list(request.output_filter), self.limits, self.batcher
            )
        except ServingError as error:
            return _abort(context, error)
        except Exception as error:  # never let one request take the server down
            log.exception("Predict failed")
            return _abort(context, ServingError(StatusCode.INTERNAL, f"{type(error).__name__}: {error}"))
        response = predict_pb2.PredictResponse()
        response.model_spec.name = servable.name
        response.model_spec.version.value = servable.version
        response.model_spec.signature_name = signature
        for name, value in outputs.items():
            response.outputs[name].CopyFrom(tensors.to_proto(value))
        return response

    def GetModelMetadata(self, request, context):
        try:
            fields = set(request.metadata_field)
            if fields - {SIGNATURE_DEF_FIELD}:
                raise ServingError(StatusCode.INVALID_ARGUMENT, f"metadata_field must be {SIGNATURE_DEF_FIELD!r}, got {sorted(fields)}")
            servable = self.models.get(request.model_spec.name, _version(request.model_spec))
        except ServingError as error:
            return _abort(context, error)
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = servable.name
        response.model_spec.version.value = servable.version
        signatures = get_model_metadata_pb2.SignatureDefMap()
        for name, signature in servable.signature_defs.items():
            signatures.signature_def[name].CopyFrom(signature)
        response.metadata[SIGNATURE_DEF_FIELD].Pack(signatures)
        return response


class ModelService(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, models: ModelManager):
        self.models = models

    def GetModelStatus(self, request, context):
        try:
            states = self.models.status(request.model_spec.name, _version(request.model_spec))
        except ServingError as error:
            return _abort(context, error)
        response = get_model_status_pb2.GetModelStatusResponse()
        for state in states:
            status = response.model_version_status.add(
                version=state.version, state=get_model_status_pb2.ModelVersionStatus.State.Value(state.state)
            )
            if state.error:
                status.status.error_code = StatusCode.UNKNOWN.value[0]
                status.status.error_message = state.error
        return response


def add_services(server: grpc.Server, models: ModelManager, limits: predict.Limits, batcher=None) -> None:
    """`batcher`: a serving.batching.Batcher for Predict calls (None: each request runs on its own)."""
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(PredictionService(models, limits, batcher), server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelService(models), server)
