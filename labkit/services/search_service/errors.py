"""Errors that map onto Azure AI Search's JSON error body `{"error": {"code", "message"}}`.

Introduced in notebooks/02_index_data.ipynb.
"""

from __future__ import annotations

LOCAL = "the local search service"


class SearchError(Exception):
    """An error with the HTTP status and the Azure-shaped code and message to return."""

    def __init__(self, status: int, message: str, code: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code or _DEFAULT_CODES.get(status, "")

    def body(self) -> dict[str, dict[str, str]]:
        return {"error": {"code": self.code, "message": self.message}}


_DEFAULT_CODES = {
    400: "InvalidRequestParameter",
    401: "Unauthorized",
    403: "Forbidden",
    404: "ResourceNotFound",
    405: "MethodNotAllowed",
    409: "ResourceAlreadyExists",
    412: "PreconditionFailed",
    413: "RequestEntityTooLarge",
    500: "InternalServerError",
}


def bad_request(message: str) -> SearchError:
    return SearchError(400, message)


def unsupported(what: str) -> SearchError:
    """A 400 for a feature Azure has but this local service does not implement."""
    return SearchError(400, f"{what}: this is not supported by {LOCAL}.", "FeatureNotSupported")


def invalid_expression(message: str, parameter: str) -> SearchError:
    """Azure's wording for a bad $filter / $orderby / $select / facet expression."""
    return SearchError(400, f"Invalid expression: {message}\r\nParameter name: {parameter}")


def index_not_found(name: str) -> SearchError:
    return SearchError(404, f"The index '{name}' for service 'local' was not found.")
