"""CloudEvents from model-server payload loggers (KServe, Seldon Core v1) → :class:`InferenceEvent`.

Both loggers send HTTP *binary* mode: context attributes in ``ce-*`` headers, the logged request
or response body as the HTTP body. *Structured* mode (``Content-Type:
application/cloudevents+json``, attributes and ``data`` / ``data_base64`` in one JSON object) is
read too, for brokers and relays that re-encode events.

Facts this module relies on (from the loggers' source and captures, see the test fixtures):

* KServe: type ``org.kubeflow.serving.inference.request|response``; request and response share
  ``ce-id``; extensions ``inferenceservicename``, ``namespace``, ``component`` (predictor,
  transformer, explainer), ``endpoint`` (often empty), ``metadata``, ``annotations``.
* Seldon v1: type ``io.seldon.serving.inference.request|response``; every event gets its *own*
  ``ce-id`` and the pair shares ``ce-requestid``; extensions ``modelid`` (graph node),
  ``inferenceservicename`` (SeldonDeployment), ``namespace``, ``endpoint`` (predictor), ``protocol``.

So the pairing key (:attr:`InferenceEvent.id`) is ``requestid`` when present, else ``id``.
Seldon's own request-logger tests send events without ``ce-id``/``ce-specversion``; a missing
specversion is tolerated, an unknown one is refused.
"""

from __future__ import annotations

import base64
import binascii
import calendar
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import unquote

from exporter.batch import PayloadError
from exporter.formats._common import load_json, text, type_name
from exporter.formats.oip import model_info

Kind = Literal["request", "response", "feedback"]

EVENT_TYPES: dict[str, tuple[str, Kind]] = {
    "org.kubeflow.serving.inference.request": ("kserve", "request"),
    "org.kubeflow.serving.inference.response": ("kserve", "response"),
    "io.seldon.serving.inference.request": ("seldon", "request"),
    "io.seldon.serving.inference.response": ("seldon", "response"),
    "io.seldon.serving.feedback": ("seldon", "feedback"),
}
SPEC_VERSIONS = frozenset({"1.0", "0.3"})
STRUCTURED = "application/cloudevents+json"
BATCHED = "application/cloudevents-batch+json"
_MAX_ATTR = 1024

_RFC3339 = re.compile(r"^(\d{4})-(\d\d)-(\d\d)[Tt ](\d\d):(\d\d):(\d\d)(\.\d+)?([Zz]|[+-]\d\d:\d\d)$")


@dataclass(frozen=True)
class InferenceEvent:
    """One logged inference request or response, before it is paired with its other half."""

    id: str
    """Pairing key shared by a request and its response (Seldon ``requestid``, else ``id``)."""
    kind: Kind
    model: str | None
    """KServe InferenceService / SeldonDeployment name (``inferenceservicename``), else ``modelid``."""
    version: str | None
    """``model_version`` named in the body (OIP responses); the loggers send no version attribute."""
    body: Any
    """The logged request or response body, parsed JSON."""
    received_at: float
    """Wall-clock arrival time (``time.time()``); drives the joiner's TTL."""
    event_id: str | None = None
    type: str = ""
    source: str | None = None
    time: float | None = None
    """``ce-time`` as epoch seconds; newer KServe sets request-arrival / response-complete times, so
    the difference of a pair approximates model latency. None when absent or unparseable."""
    component: str | None = None
    """KServe ``component`` or Seldon ``modelid``: which part of a deployment logged the event."""
    namespace: str | None = None
    endpoint: str | None = None
    server: str = ""
    """``kserve`` or ``seldon``, from the event type."""
    attributes: Mapping[str, str] = field(default_factory=dict)
    """Every context attribute as received (lower-case names, no ``ce-`` prefix)."""


def parse_time(value: str | None) -> float | None:
    """RFC 3339 → epoch seconds, keeping sub-microsecond digits (Go sends nanoseconds, which
    ``datetime.fromisoformat`` on Python 3.10 refuses)."""
    if not value:
        return None
    m = _RFC3339.match(value.strip())
    if not m:
        return None
    y, mo, d, h, mi, s = (int(g) for g in m.groups()[:6])
    if not (1 <= mo <= 12 and 1 <= d <= 31 and h < 24 and mi < 60 and s < 61):
        return None
    epoch = calendar.timegm((y, mo, d, h, mi, s, 0, 0, 0))
    frac = float(m.group(7)) if m.group(7) else 0.0
    tz = m.group(8)
    offset = 0 if tz in ("Z", "z") else (1 if tz[0] == "+" else -1) * (int(tz[1:3]) * 3600 + int(tz[4:6]) * 60)
    return epoch + frac - offset


def _media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def _lower(headers: Mapping[str, str]) -> dict[str, str]:
    return {str(k).lower(): str(v) for k, v in headers.items()}


def _parse_data(data: bytes | str, content_type: str | None, field: str) -> Any:
    """The logged body. It is parsed as JSON whatever the content type says: KServe forwards the
    client's Content-Type, which is often missing or ``application/x-www-form-urlencoded`` for a
    JSON body sent with ``curl -d``."""
    try:
        return load_json(data, field)
    except PayloadError as e:
        media = _media_type(content_type)
        if media and media != "application/json" and not media.endswith("+json"):
            raise PayloadError(field, f"{e.reason} (content type {media!r}: mlmon reads JSON inference "
                                      "bodies only)") from None
        raise


def _build(attrs: dict[str, str], body: Any, received_at: float, prefix: str) -> InferenceEvent:
    """Validate the context attributes shared by both modes; ``prefix`` names fields in errors."""
    spec = text(attrs.get("specversion"))
    if spec is not None and spec not in SPEC_VERSIONS:
        raise PayloadError(f"{prefix}specversion", f"unsupported CloudEvents specversion {spec[:40]!r} "
                                                   "(expected 1.0)")
    etype = text(attrs.get("type"))
    if etype is None:
        raise PayloadError(f"{prefix}type", "is required (e.g. org.kubeflow.serving.inference.request)")
    known = EVENT_TYPES.get(etype)
    if known is None:
        raise PayloadError(f"{prefix}type", f"unsupported event type {etype[:100]!r} (expected one of "
                                            f"{', '.join(EVENT_TYPES)})")
    server, kind = known
    event_id = text(attrs.get("id"))
    key = text(attrs.get("requestid")) or event_id
    if key is None:
        raise PayloadError(f"{prefix}id", "is required (ce-id, or Seldon's ce-requestid) to pair a request "
                                          "with its response")
    for name, value in attrs.items():
        if len(value) > _MAX_ATTR and name not in ("metadata", "annotations"):
            raise PayloadError(f"{prefix}{name}", f"longer than {_MAX_ATTR} characters")
    _, version = model_info(body) if kind == "response" else (None, None)
    return InferenceEvent(
        id=key,
        kind=kind,
        model=text(attrs.get("inferenceservicename")) or text(attrs.get("modelid")),
        version=version,
        body=body,
        received_at=received_at,
        event_id=event_id,
        type=etype,
        source=text(attrs.get("source")),
        time=parse_time(attrs.get("time")),
        component=text(attrs.get("component")) or text(attrs.get("modelid")),
        namespace=text(attrs.get("namespace")),
        endpoint=text(attrs.get("endpoint")),
        server=server,
        attributes=attrs,
    )


def decode_binary(headers: Mapping[str, str], body: bytes, received_at: float | None = None) -> InferenceEvent:
    """Binary mode: attributes from ``ce-*`` headers (percent-decoded, per the HTTP binding)."""
    return _decode_binary(_lower(headers), body, received_at)


def _decode_binary(h: dict[str, str], body: bytes, received_at: float | None) -> InferenceEvent:
    attrs = {k[3:]: unquote(v) if "%" in v else v for k, v in h.items() if k.startswith("ce-") and len(k) > 3}
    if "type" not in attrs:
        raise PayloadError("ce-type", "header is required: expected a CloudEvent in binary mode (ce-* headers) "
                                      f"or structured mode (Content-Type: {STRUCTURED})")
    data = _parse_data(body, h.get("content-type"), "body")
    return _build(attrs, data, time.time() if received_at is None else received_at, "ce-")


def decode_structured(body: bytes, received_at: float | None = None) -> InferenceEvent:
    """Structured mode: one JSON object with the attributes and ``data`` or ``data_base64``."""
    doc = load_json(body, "body")
    if not isinstance(doc, dict):
        raise PayloadError("body", f"expected a CloudEvent JSON object, got {type_name(doc)}")
    attrs: dict[str, str] = {}
    for k, v in doc.items():
        if k in ("data", "data_base64"):
            continue
        if isinstance(v, (dict, list)):
            raise PayloadError(k, f"context attribute must be a string, number or boolean, got {type_name(v)}")
        if v is not None:
            attrs[k.lower()] = str(v).lower() if isinstance(v, bool) else str(v)
    content_type = attrs.get("datacontenttype")
    if "data_base64" in doc:
        raw = doc["data_base64"]
        if not isinstance(raw, str):
            raise PayloadError("data_base64", f"expected a base64 string, got {type_name(raw)}")
        try:
            decoded = base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError):
            raise PayloadError("data_base64", "not valid base64") from None
        data = _parse_data(decoded, content_type, "data_base64")
    elif "data" in doc:
        data = doc["data"]
        if isinstance(data, str) and data.lstrip()[:1] in ("{", "["):
            # a JSON body that a relay stored as a string: read what it holds
            data = _parse_data(data, content_type, "data")
    else:
        raise PayloadError("data", "is required: the event carries no inference body")
    return _build(attrs, data, time.time() if received_at is None else received_at, "")


def decode(headers: Mapping[str, str], body: bytes, received_at: float | None = None) -> InferenceEvent:
    """Decode one CloudEvent in whichever HTTP mode it was sent."""
    h = _lower(headers)
    media = _media_type(h.get("content-type"))
    if media == BATCHED:
        raise PayloadError("content-type", "batched CloudEvents are not supported; send one event per request")
    if media == STRUCTURED:
        return decode_structured(body, received_at)
    return _decode_binary(h, body, received_at)
