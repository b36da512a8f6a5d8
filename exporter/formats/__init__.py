"""Wire formats → mlmon's columnar data: one parser module per protocol, plus a dispatcher.

* :mod:`~exporter.formats.cloudevents` — payload-logger CloudEvents (KServe, Seldon) →
  :class:`InferenceEvent`.
* :mod:`~exporter.formats.oip` — Open Inference Protocol JSON (KServe v2, MLServer, Triton).
* :mod:`~exporter.formats.kserve_v1` — KServe v1, TF Serving and Seldon v1 bodies.
* :mod:`~exporter.formats.native` — mlmon's own ``/v1/predictions`` API (not dispatched here).

The body of a logged event says which protocol it speaks, so the dispatcher detects it from
the JSON shape rather than from configuration: an OIP body has ``inputs``/``outputs`` arrays of
tensor objects, everything else with ``instances``/``predictions``/``data``… belongs to the v1
family. Every parser reports bad input as :class:`~exporter.batch.PayloadError` naming the header
or JSON path and the reason, and raises nothing else.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from exporter.batch import PayloadError
from exporter.formats import kserve_v1, oip
from exporter.formats._common import Columns, ensure_json, require_object
from exporter.formats.cloudevents import InferenceEvent, Kind, decode

__all__ = [
    "FORMATS",
    "EventRows",
    "Format",
    "InferenceEvent",
    "decode_event",
    "parse_request",
    "parse_response",
    "request_format",
    "response_format",
    "rows_from_event",
]


@dataclass(frozen=True)
class Format:
    """One body protocol: how to recognise its requests and responses, and how to read them."""

    name: str
    looks_like_request: Callable[[Any], bool]
    looks_like_response: Callable[[Any], bool]
    parse_request: Callable[[Any, Sequence[str] | None], tuple[int, Columns]]
    parse_response: Callable[[Any, str | None], list[Any]]
    response_error: Callable[[Any], str | None]


FORMATS: tuple[Format, ...] = (
    # OIP first: TF Serving's columnar ``inputs`` is an object or an array of values, never an
    # array of tensor objects, so the OIP test cannot claim a TF body.
    Format("oip", oip.looks_like_request, oip.looks_like_response,
           oip.parse_request, oip.parse_response, oip.response_error),
    Format("kserve_v1", kserve_v1.looks_like_request, kserve_v1.looks_like_response,
           kserve_v1.parse_request, kserve_v1.parse_response, kserve_v1.response_error),
)


def _keys(body: dict[str, Any]) -> str:
    return ", ".join(repr(k) for k in list(body)[:10]) or "none"


def request_format(body: Any) -> Format:
    body = require_object(body)
    for fmt in FORMATS:
        if fmt.looks_like_request(body):
            return fmt
    raise PayloadError("body", "not a recognised inference request: expected inputs (Open Inference "
                               "Protocol), instances / inputs / examples (KServe v1, TF Serving) or data "
                               f"(Seldon); got keys {_keys(body)}")


def response_format(body: Any) -> Format:
    body = require_object(body)
    for fmt in FORMATS:
        if fmt.looks_like_response(body):
            return fmt
    raise PayloadError("body", "not a recognised inference response: expected outputs (Open Inference "
                               "Protocol), predictions / outputs / results (KServe v1, TF Serving) or data "
                               f"(Seldon); got keys {_keys(body)}")


def parse_request(body: Any, feature_names: Sequence[str] | None = None) -> tuple[int, Columns]:
    """Any supported request body (bytes or parsed JSON) → ``(n_rows, {feature: column})``."""
    body = ensure_json(body)
    return request_format(body).parse_request(body, feature_names)


def parse_response(body: Any, output: str | None = None) -> list[Any]:
    """Any supported response body (bytes or parsed JSON) → one prediction per record."""
    body = ensure_json(body)
    return response_format(body).parse_response(body, output)


def response_error(body: Any) -> str | None:
    """The failure a response body reports (``{"error": ...}``, Seldon ``FAILURE``), else None."""
    for fmt in FORMATS:
        error = fmt.response_error(body)
        if error is not None:
            return error
    return None


@dataclass(frozen=True)
class EventRows:
    """What one event contributes to a record: a request's features or a response's predictions."""

    kind: Kind
    n_rows: int
    features: Columns
    predictions: list[Any] | None = None
    error: str | None = None
    """The failure a response reports; its request's records are then counted as errors."""
    format: str = ""


def decode_event(headers: Mapping[str, str], body: bytes, received_at: float | None = None) -> InferenceEvent:
    """An HTTP CloudEvent (binary or structured mode) → :class:`InferenceEvent`."""
    return decode(headers, body, received_at)


def rows_from_event(event: InferenceEvent, feature_names: Sequence[str] | None = None,
                    output: str | None = None) -> EventRows:
    """Read an event's body: features of a request, predictions (or a failure) of a response."""
    if event.kind == "feedback":
        raise PayloadError("ce-type", "a feedback event carries labels, not an inference request or response")
    if event.kind == "request":
        fmt = request_format(event.body)
        n, features = fmt.parse_request(event.body, feature_names or None)
        return EventRows("request", n, features, format=fmt.name)
    error = response_error(event.body)
    if error is not None:
        return EventRows("response", 0, {}, None, error)
    fmt = response_format(event.body)
    predictions = fmt.parse_response(event.body, output)
    return EventRows("response", len(predictions), {}, predictions, format=fmt.name)
