"""``GET /openapi.json``: every route and body of the HTTP API, kept true by the fuzz test.

The schemas describe what a well-formed request looks like; anything else gets a 4xx answer
with the field and reason (``Error``), never a 5xx.
"""

from __future__ import annotations

from typing import Any

from exporter import __version__
from exporter.formats.arrow import MEDIA_TYPE as ARROW_STREAM
from exporter.formats.native import MAX_LATENCY_SECONDS

EVENT_TYPES = ["org.kubeflow.serving.inference.request", "org.kubeflow.serving.inference.response",
               "io.seldon.serving.inference.request", "io.seldon.serving.inference.response"]
_ERROR = {"$ref": "#/components/schemas/Error"}
_INGEST_RESULT = {"$ref": "#/components/schemas/IngestResult"}
_SCALAR = {"oneOf": [{"type": "string"}, {"type": "number"}, {"type": "boolean"}]}
_NULLABLE_SCALAR = {"nullable": True, **_SCALAR}
_NAME = {"type": "string", "minLength": 1, "maxLength": 128}
_PREDICTION = {"nullable": True, "oneOf": [
    {"type": "string"}, {"type": "number"}, {"type": "boolean"},
    {"type": "object", "additionalProperties": {"type": "number", "minimum": 0, "maximum": 1}, "minProperties": 1},
    {"type": "array", "items": {"type": "number", "minimum": 0, "maximum": 1}, "minItems": 1},
]}
_ID = {"nullable": True, "oneOf": [{"type": "string", "maxLength": 256}, {"type": "integer"}]}

_SCHEMAS: dict[str, Any] = {
    "Error": {"type": "object", "required": ["error"], "properties": {
        "error": {"type": "string"}, "field": {"type": "string"},
        "models": {"type": "array", "items": {"type": "string"}}}},
    "Rejection": {"type": "object", "required": ["index", "field", "reason"], "properties": {
        "index": {"type": "integer"}, "field": {"type": "string"}, "reason": {"type": "string"}}},
    "Record": {"type": "object", "required": ["features"], "properties": {
        "id": _ID, "features": {"type": "object", "additionalProperties": _NULLABLE_SCALAR},
        "prediction": _PREDICTION,
        "latency_seconds": {"type": "number", "minimum": 0, "maximum": MAX_LATENCY_SECONDS, "nullable": True},
        "error": {"nullable": True, "oneOf": [{"type": "boolean"}, {"type": "string"}]},
        "groups": {"type": "object", "nullable": True, "additionalProperties": _NULLABLE_SCALAR}}},
    "RowBatch": {"type": "object", "required": ["model", "records"], "properties": {
        "model": _NAME, "version": _NAME,
        "records": {"type": "array", "items": {"$ref": "#/components/schemas/Record"}}}},
    "ColumnBatch": {"type": "object", "required": ["model", "features"], "properties": {
        "model": _NAME, "version": _NAME,
        "features": {"type": "object", "additionalProperties": {"type": "array", "items": _NULLABLE_SCALAR}},
        "ids": {"type": "array", "items": _ID},
        "predictions": {"type": "array", "items": _PREDICTION},
        "latency_seconds": {"type": "array", "items": {"type": "number", "minimum": 0, "maximum": MAX_LATENCY_SECONDS,
                                                       "nullable": True}},
        "errors": {"type": "array", "items": {"type": "boolean", "nullable": True}},
        "groups": {"type": "object", "additionalProperties": {"type": "array", "items": _NULLABLE_SCALAR}}}},
    "IngestResult": {"type": "object", "required": ["accepted", "rejected"], "properties": {
        "accepted": {"type": "integer"},
        "rejected": {"type": "array", "items": {"$ref": "#/components/schemas/Rejection"}},
        "data_quality": {"type": "object", "additionalProperties": {"type": "integer"}}}},
    "Label": {"type": "object", "required": ["id", "label"], "properties": {"id": _ID, "label": _SCALAR}},
    "LabelBatch": {"type": "object", "required": ["model"], "properties": {
        "model": _NAME, "labels": {"type": "array", "items": {"$ref": "#/components/schemas/Label"}},
        "id": _ID, "label": _SCALAR}},
    "LabelResult": {"type": "object", "properties": {
        "matched": {"type": "integer"}, "unmatched": {"type": "integer"}, "duplicates": {"type": "integer"},
        "rejected": {"type": "array", "items": {"type": "object"}}}},
    "InferenceBody": {"description": "Binary mode: the logged body itself (KServe v1 instances, Open Inference "
                      "Protocol inputs/outputs, TF Serving, Seldon).", "oneOf": [
        {"type": "object", "required": ["instances"], "properties": {
            "instances": {"type": "array", "items": {"type": "array", "items": {"type": "number"}}}}},
        {"type": "object", "required": ["predictions"], "properties": {
            "predictions": {"type": "array", "items": _SCALAR}}},
        {"type": "object", "required": ["inputs"], "properties": {"inputs": {"type": "array", "items": {
            "type": "object", "required": ["name", "shape", "datatype", "data"], "properties": {
                "name": {"type": "string"}, "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
                "datatype": {"type": "string", "enum": ["FP32", "FP64", "INT64", "BYTES", "BOOL"]},
                "data": {"type": "array", "items": _SCALAR}}}}}}]},
    "CloudEvent": {"type": "object", "description": "A structured-mode CloudEvent whose data is an inference "
                   "request or response (KServe v1/v2, Open Inference Protocol, TF Serving, Seldon).",
                   "required": ["specversion", "id", "source", "type"], "properties": {
                       "specversion": {"type": "string", "enum": ["1.0"]}, "id": {"type": "string"},
                       "source": {"type": "string"}, "type": {"type": "string", "enum": EVENT_TYPES},
                       "inferenceservicename": {"type": "string"},
                       "data": {"$ref": "#/components/schemas/InferenceBody"}}},
}


def _json_body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def _answer(description: str, schema: dict[str, Any] | None = None, media: str = "application/json") -> dict[str, Any]:
    out: dict[str, Any] = {"description": description}
    if schema is not None:
        out["content"] = {media: {"schema": schema}}
    return out


_ERRORS = {str(code): _answer(text, _ERROR) for code, text in (
    (400, "Malformed JSON or wrong top-level shape; `field` names the JSON path"),
    (401, "Missing or wrong credentials"), (404, "Unknown model"), (413, "Body over server.max_body_bytes"),
    (415, "Content-Type is not JSON"))}

_PATHS: dict[str, tuple[str, dict[str, Any]]] = {
    "/v1/predictions": ("ingest", {"post": {
        "summary": "Ingest prediction records (row form or columnar form, JSON or an Arrow IPC stream)",
        "requestBody": {"required": True, "content": {
            "application/json": {"schema": {"oneOf": [{"$ref": "#/components/schemas/RowBatch"},
                                                      {"$ref": "#/components/schemas/ColumnBatch"}]}},
            ARROW_STREAM: {"schema": {"type": "string", "format": "binary", "description":
                "The columnar form's fields as Arrow columns (features and groups as struct columns), model "
                "and version in the schema metadata; needs pyarrow on the sidecar (mlmon[arrow])"}}}},
        "responses": {"200": _answer("Accepted; refused records are listed", _INGEST_RESULT),
                      "422": _answer("Every record was refused", _INGEST_RESULT),
                      **_ERRORS}}}),
    "/v1/labels": ("ingest", {"post": {
        "summary": "Ground-truth labels joined to earlier predictions by id",
        "requestBody": _json_body({"$ref": "#/components/schemas/LabelBatch"}),
        "responses": {"200": _answer("Join result", {"$ref": "#/components/schemas/LabelResult"}), **_ERRORS}}}),
    "/v1/events": ("ingest", {"post": {
        "summary": "Payload-logger CloudEvents (binary mode with ce-* headers, or structured mode)",
        "requestBody": {"required": True, "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/InferenceBody"}},
            "application/cloudevents+json": {"schema": {"$ref": "#/components/schemas/CloudEvent"}}}},
        "parameters": [
            {"name": "ce-id", "in": "header", "required": True,
             "schema": {"type": "string", "minLength": 1, "maxLength": 64, "pattern": "^[a-z0-9-]+$"}},
            {"name": "ce-type", "in": "header", "required": True, "schema": {"type": "string", "enum": EVENT_TYPES}},
            {"name": "ce-source", "in": "header", "required": True, "schema": {"type": "string", "enum": ["fuzz"]}},
            {"name": "ce-specversion", "in": "header", "required": True, "schema": {"type": "string", "enum": ["1.0"]}},
            {"name": "ce-inferenceservicename", "in": "header", "required": True, "schema": {"type": "string"}}],
        "responses": {"202": _answer("Accepted", {"type": "object", "properties": {
            "ingested": {"type": "integer"}, "pending": {"type": "integer"}}}), **_ERRORS}}}),
    "/v1/client-stats": ("ingest", {"post": {
        "summary": "A Python client's cumulative loss counts (exporter/client.py reports them)",
        "requestBody": _json_body({"type": "object", "required": ["model", "client_id"], "properties": {
            "model": _NAME, "client_id": {"type": "string", "minLength": 1, "maxLength": 64},
            **{reason: {"type": "integer", "minimum": 0}
               for reason in ("dropped", "failed", "unserialisable")}}}),
        "responses": {"200": _answer("Recorded", {"type": "object", "properties": {"status": {"type": "string"}}}),
                      **_ERRORS}}}),
    "/v1/models": ("read", {"get": {
        "summary": "Status of every configured model",
        "responses": {"200": _answer("Models", {"type": "object", "properties": {
            "models": {"type": "array", "items": {"type": "object"}}}}), "401": _ERRORS["401"]}}}),
    "/openapi.json": ("read", {"get": {
        "summary": "This document", "responses": {"200": _answer("OpenAPI 3.0 document", {"type": "object"}),
                                                  "401": _ERRORS["401"]}}}),
    "/metrics": ("scrape", {"get": {
        "summary": "Prometheus exposition (OpenMetrics text when Accept asks for it; gzip when Accept-Encoding allows)",
        "responses": {"200": _answer("Metrics", {"type": "string"}, "text/plain"), "401": _ERRORS["401"]}}}),
    "/healthz": ("scrape", {"get": {
        "summary": "Liveness (never needs credentials)",
        "responses": {"200": _answer("Alive", {"type": "object"})}}}),
    "/readyz": ("scrape", {"get": {
        "summary": "Readiness: 503 before the evaluation loop runs and while draining on SIGTERM",
        "responses": {"200": _answer("Ready", {"type": "object"}), "503": _answer("Not ready", _ERROR)}}}),
}


def _with_models(node: Any, models: list[str]) -> Any:
    """A copy of ``node`` where every ``model`` property names one of the configured models."""
    if isinstance(node, dict):
        out = {k: _with_models(v, models) for k, v in node.items()}
        props = out.get("properties")
        for key in ("model", "inferenceservicename"):
            if isinstance(props, dict) and key in props:
                props[key] = {"type": "string", "enum": models}
        if out.get("name") == "ce-inferenceservicename":
            out["schema"] = {"type": "string", "enum": models}
        return out
    if isinstance(node, list):
        return [_with_models(v, models) for v in node]
    return node


def openapi_document(groups: tuple[str, ...], models: list[str] | None = None) -> dict[str, Any]:
    """The document for one listener: only the routes it serves; ``model`` lists the configured models."""
    schemas = _with_models(_SCHEMAS, models) if models else _SCHEMAS
    paths = {path: spec for path, (group, spec) in _PATHS.items() if group in groups}
    return {
        "openapi": "3.0.3",
        "info": {"title": "mlmon", "version": __version__,
                 "description": "Prometheus sidecar for ML models: ingest predictions, labels and events."},
        "paths": _with_models(paths, models) if models else paths,
        "components": {"schemas": schemas, "securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer"}, "basic": {"type": "http", "scheme": "basic"}}},
    }
