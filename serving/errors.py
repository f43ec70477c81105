"""Request errors with TF Serving's status codes (gRPC codes; REST maps them to HTTP)."""

from __future__ import annotations

from grpc import StatusCode

HTTP_STATUS = {
    StatusCode.INVALID_ARGUMENT: 400,
    StatusCode.FAILED_PRECONDITION: 400,
    StatusCode.NOT_FOUND: 404,
    StatusCode.RESOURCE_EXHAUSTED: 413,
    StatusCode.UNAVAILABLE: 503,
    StatusCode.INTERNAL: 500,
}


class ServingError(Exception):
    """A request the server answers with `code` and `message` instead of outputs."""

    def __init__(self, code: StatusCode, message: str):
        super().__init__(message)
        self.code = code
        self.message = message

    @property
    def http_status(self) -> int:
        return HTTP_STATUS.get(self.code, 500)


__all__ = ["ServingError", "StatusCode", "HTTP_STATUS"]
