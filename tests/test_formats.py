"""Wire-format parsers against real payloads published by KServe, Seldon, MLServer, Triton and TF Serving.

Every test that reads a payload runs against ``tests/payloads`` (written for these tests from the
protocols' documentation, see its README) and, when present, once more against the shared captures
(``../shared/fixtures/payloads`` or ``$MLMON_FIXTURES``; provenance in their SOURCES.md), so a plain
clone runs everything and CI with the captures checks both.
Files named ``*INVALID*`` / ``*NONCONFORMANT*`` (and a few documented-broken examples) must give
a ``PayloadError`` naming the field, never another exception.
"""

from __future__ import annotations

import base64
import copy
import json
import random
from typing import Any

import pytest
from helpers import OWN_PAYLOADS, PAYLOAD_ROOTS, curl_events, fixture, iso_seconds, payload_dir, use_payload_root

from exporter import formats
from exporter.batch import PayloadError
from exporter.formats import kserve_v1, oip
from exporter.formats.cloudevents import parse_time

IRIS = ("sepal_length", "sepal_width", "petal_length", "petal_width")
TITANIC = ("PassengerId", "Pclass", "Name", "Sex", "Age", "SibSp", "Parch", "Ticket", "Fare", "Cabin", "Embarked")


# ---- fixture loaders ----------------------------------------------------------------------

@pytest.fixture(params=PAYLOAD_ROOTS, autouse=True)
def payload_root(request: pytest.FixtureRequest) -> Any:
    """Run the test once per payload directory (ours always, the shared captures when present)."""
    use_payload_root(request.param)
    yield request.param
    use_payload_root(OWN_PAYLOADS)


def load(rel: str) -> Any:
    return json.loads(fixture(rel).read_bytes())


_EVENT_MARKER = "☁️  cloudevents.Event".encode()


def event_display(rel: str) -> list[tuple[dict[str, str], bytes]]:
    """knative ``event_display`` output → ``[(attributes, data bytes)]`` (data kept as bytes: one
    capture holds a PNG)."""
    events = []
    for chunk in fixture(rel).read_bytes().split(_EVENT_MARKER)[1:]:
        head, _, data = chunk.partition(b"\nData,\n")
        attrs = {}
        for line in head.decode().splitlines():
            if line.startswith("  ") and ":" in line:
                key, _, value = line.strip().partition(":")
                attrs[key.strip()] = value.strip()
        body = b"\n".join(ln[2:] if ln.startswith(b"  ") else ln for ln in data.split(b"\n"))
        events.append((attrs, body))
    return events


def as_binary(attrs: dict[str, str], data: bytes) -> tuple[dict[str, str], bytes]:
    """The HTTP binary-mode request a logger sends for these attributes (Go canonical header case)."""
    headers = {f"Ce-{k.capitalize()}": v for k, v in attrs.items() if k != "datacontenttype"}
    headers["Content-Type"] = attrs.get("datacontenttype", "")
    return headers, data


def as_structured(attrs: dict[str, str], data: bytes) -> tuple[dict[str, str], bytes]:
    doc = {**attrs, "data": json.loads(data)}
    return {"Content-Type": "application/cloudevents+json; charset=utf-8"}, json.dumps(doc).encode()


def echo_capture(rel: str) -> list[tuple[dict[str, str], bytes]]:
    """http-echo output (one JSON document per request, separated by dashes) → ``[(headers, body)]``."""
    out = []
    for chunk in fixture(rel).read_text().split("-----------------")[1:]:
        doc, _ = json.JSONDecoder().raw_decode(chunk.strip())
        out.append((doc["headers"], doc["body"].encode()))
    return out


def json_blocks(rel: str) -> list[str]:
    """The JSON documents of an HTTP example in a doc: from a ``{`` line to the ``}`` at its indent."""
    lines = fixture(rel).read_text().splitlines()
    blocks, i = [], 0
    while i < len(lines):
        if lines[i].strip() == "{":
            indent = lines[i][: len(lines[i]) - len(lines[i].lstrip())]
            j = next(j for j in range(i + 1, len(lines)) if lines[j].rstrip() == indent + "}")
            blocks.append("\n".join(lines[i:j + 1]))
            i = j + 1
        else:
            i += 1
    return blocks


def kafka_values(rel: str) -> dict[str, Any]:
    """``seldon pipeline inspect`` lines → ``{topic: value (protojson)}``."""
    out = {}
    for line in fixture(rel).read_text().splitlines():
        if line and not line.startswith("#"):
            parts = line.split("\t")
            out[parts[0]] = json.loads(parts[2])
    return out


def derived_headers(rel: str, fill: dict[str, str]) -> dict[str, str]:
    """The header layout in ``binary_mode_headers_DERIVED.txt`` with its ``<placeholders>`` filled."""
    lines = fixture(rel).read_text().splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith("POST "))
    headers = {}
    for line in lines[start + 1:]:
        if not line.strip():
            break
        name, _, value = line.partition(":")
        value = value.strip()
        value = fill.get(name.lower(), "") if value.startswith("<") else value.split("  ")[0].strip()
        headers[name] = value
    return headers


def oip_error(fn: Any, *args: Any) -> PayloadError:
    with pytest.raises(PayloadError) as info:
        fn(*args)
    return info.value


# ---- KServe v1 / TF Serving / Seldon v1 bodies --------------------------------------------

def test_kserve_v1_iris_request_positional():
    n, cols = formats.parse_request(load("kserve/v1_request_body.json"))
    assert n == 2
    assert list(cols) == ["f0", "f1", "f2", "f3"]
    assert cols["f0"] == [6.8, 6.0] and cols["f3"] == [1.4, 1.6]
    n, cols = kserve_v1.parse_request(fixture("kserve/v1_request_body.json").read_bytes(), IRIS)
    assert list(cols) == list(IRIS) and cols["petal_length"] == [4.8, 4.5]


def test_positional_width_mismatch_names_the_field():
    err = oip_error(formats.parse_request, load("kserve/v1_request_body.json"), IRIS[:3])
    assert err.field == "instances"
    assert "4 values" in err.reason and "3 features" in err.reason


def test_kserve_v1_mixed_types_kept_raw():
    n, cols = formats.parse_request(load("kserve/v1_request_mixed_types.json"), TITANIC)
    assert n == 2 and list(cols) == list(TITANIC)
    assert cols["Name"][0] == "Braund, Mr. Owen Harris"
    assert cols["Cabin"] == [None, "C85"]          # null stays missing, not dropped
    assert cols["Fare"] == [7.25, 71.2833]
    n, cols = formats.parse_request(load("kserve/v1_request_mixed_types.json"))
    assert list(cols) == [f"f{j}" for j in range(11)]


def test_kserve_v1_response():
    assert formats.parse_response(load("kserve/v1_response_body.json")) == [1, 1]


def test_tfserving_row_request_of_scalars():
    n, cols = formats.parse_request(load("tfserving/predict_row_request.json"))
    assert (n, cols) == (3, {"f0": [1.0, 2.0, 5.0]})
    n, cols = formats.parse_request(load("tfserving/predict_row_request.json"), ["x"])
    assert cols == {"x": [1.0, 2.0, 5.0]}


def test_tfserving_row_response():
    assert formats.parse_response(load("tfserving/predict_row_response.json")) == [3.5, 4.0, 5.5]


def test_tfserving_columnar_request():
    n, cols = formats.parse_request(load("tfserving/predict_columnar_request.json"))
    assert n == 2
    assert cols["tag"] == ["foo", "bar"]
    assert cols["signal"] == [[1, 2, 3, 4, 5], [3, 4, 1, 2, 5]]     # vector values stay lists
    assert cols["sensor"][1] == [[4, 5], [6, 8]]


def test_tfserving_columnar_equals_row_form():
    columnar = load("tfserving/predict_columnar_request.json")
    names = list(columnar["inputs"])
    rows = [dict(zip(names, vals, strict=True)) for vals in zip(*columnar["inputs"].values(), strict=True)]
    assert formats.parse_request({"instances": rows}) == formats.parse_request(columnar)


def test_tfserving_b64_examples_stay_opaque():
    n, cols = formats.parse_request(load("tfserving/classify_b64_request.json"))
    assert n == 2
    assert cols["image"] == ["aW1hZ2UgYnl0ZXM=", "YXdlc29tZSBpbWFnZSBieXRlcw=="]
    assert cols["caption"] == ["seaside", "mountains"]
    assert base64.b64decode(cols["image"][0]) == b"image bytes"


def test_tfserving_invalid_named_rows_as_published():
    text = "\n".join(ln for ln in fixture("tfserving/predict_row_named_inputs_AS_PUBLISHED_INVALID.txt")
                     .read_text().splitlines() if not ln.startswith("#"))
    err = oip_error(formats.parse_request, text.encode())
    assert err.field == "body" and "not valid JSON" in err.reason
    # with the stray bracket removed it is the row form of the columnar example
    fixed = json.loads(text.replace("5]],", "5],"))
    assert formats.parse_request(fixed) == formats.parse_request(load("tfserving/predict_columnar_request.json"))


def test_tfserving_classify_and_regress_results():
    body = {"results": [[["cat", 0.8], ["dog", 0.2]], [["cat", 0.1], ["dog", 0.9]]]}
    assert kserve_v1.parse_response(body) == [{"cat": 0.8, "dog": 0.2}, {"cat": 0.1, "dog": 0.9}]
    assert kserve_v1.parse_response({"results": [0.5, 1.5]}) == [0.5, 1.5]
    assert oip_error(kserve_v1.parse_response, {"results": [[["cat"]]]}).field == "results[0][0]"


def test_tfserving_columnar_outputs():
    assert kserve_v1.parse_response({"outputs": [[0.1, 0.9], [0.7, 0.3]]}) == [[0.1, 0.9], [0.7, 0.3]]
    body = {"outputs": {"scores": [[0.2], [0.4]], "classes": [["a"], ["b"]]}}
    assert kserve_v1.parse_response(body) == [0.2, 0.4]
    assert kserve_v1.parse_response(body, "classes") == ["a", "b"]
    assert oip_error(kserve_v1.parse_response, body, "nope").field == "outputs"


def test_seldon_v1_bodies():
    n, cols = formats.parse_request(load("seldon/v1_request_body.json"))
    assert (n, cols) == (1, {"f0": [1.0], "f1": [2.0], "f2": [5.0]})
    assert formats.parse_response(load("seldon/v1_response_body.json")) == [0.43782349911420193]
    # the response fixture ends with a newline, as the executor sent it
    assert fixture("seldon/v1_response_body.json").read_bytes().endswith(b"\n")


def test_seldon_names_win_and_must_match():
    body = {"data": {"names": ["a", "b"], "ndarray": [[1, 2], [3, 4]]}}
    assert kserve_v1.parse_request(body, ["x", "y"]) == (2, {"a": [1, 3], "b": [2, 4]})
    err = oip_error(kserve_v1.parse_request, {"data": {"names": ["a"], "ndarray": [[1, 2]]}})
    assert err.field == "data.names" and "1 names" in err.reason
    err = oip_error(kserve_v1.parse_request, {"data": {"tensor": {"shape": [2, 3], "values": [1, 2]}}})
    assert err.field == "data.tensor.shape" and "product 6 does not match 2 values" in err.reason
    assert oip_error(kserve_v1.parse_request, {"strData": "hello"}).field == "strData"
    assert oip_error(kserve_v1.parse_request, {"data": {"tftensor": {}}}).field == "data.tftensor"


def test_ragged_rows_are_refused():
    err = oip_error(kserve_v1.parse_request, {"instances": [[1, 2], [3]]})
    assert err.field == "instances[1]" and "1 values" in err.reason
    err = oip_error(kserve_v1.parse_request, {"instances": [[1, 2], {"a": 1}]})
    assert err.field == "instances[1]"


def test_response_errors_are_recognised():
    assert formats.response_error({"error": "model not ready"}) == "model not ready"
    failure = {"status": {"code": 500, "info": "boom", "reason": "MICROSERVICE_INTERNAL_ERROR",
                          "status": "FAILURE"}}
    assert "boom" in formats.response_error(failure)
    assert formats.response_error(load("seldon/v1_response_body.json")) is None
    assert oip_error(kserve_v1.parse_response, failure).field == "body"


# ---- Open Inference Protocol --------------------------------------------------------------

def test_oip_kserve_iris_tensor_nested_data():
    n, cols = formats.parse_request(load("kserve/v2_request_body.json"), IRIS)
    assert n == 2 and list(cols) == list(IRIS)
    assert cols["sepal_length"] == [6.8, 6.0] and cols["petal_width"] == [1.4, 1.6]
    flat = load("kserve/v2_request_body.json")
    flat["inputs"][0]["data"] = [v for row in flat["inputs"][0]["data"] for v in row]
    assert oip.parse_request(flat, IRIS) == (n, cols)
    err = oip_error(oip.parse_request, load("kserve/v2_request_body.json"), ["a", "b"])
    assert err.field == "inputs[0].shape" and "2 features" in err.reason


def test_oip_kserve_response_and_version():
    body = load("kserve/v2_response_body.json")
    assert formats.parse_response(body) == [1, 2]
    assert oip.model_info(body) == ("iris-classifier", "v1.0.0")


def test_oip_one_input_per_column():
    n, cols = formats.parse_request(load("kserve/v2_request_named_columns.json"))
    assert n == 2 and tuple(cols) == TITANIC
    assert cols["Cabin"] == ["", "C85"] and cols["Fare"] == [7.25, 71.2833]
    assert formats.parse_request(load("kserve/v2_request_named_columns.json"), ["ignored"]) == (n, cols)


def test_oip_pandas_content_type():
    n, cols = formats.parse_request(load("kserve/v2_request_content_type_pd.json"))
    assert n == 1 and len(cols) == 10
    assert cols["MSZoning"] == ["RL"] and cols["LotArea"] == [8450] and cols["GarageArea"] == [548]


def test_oip_mlserver_fixtures():
    assert formats.parse_request(load("mlserver/inference-request.json")) == (1, {"f0": [1], "f1": [2], "f2": [3]})
    assert formats.parse_request(load("mlserver/request_with_id.json")) == (1, {"f0": [1], "f1": [2], "f2": [3]})
    assert formats.parse_request(load("mlserver/bytes_request.json")) == (1, {"f0": ["a"], "f1": ["b"], "f2": ["c"]})
    body = load("mlserver/inference-response.json")
    assert formats.parse_response(body) == [21.0]
    assert oip.model_info(body) == ("sum-model", None)


def test_oip_shape_mismatch_message():
    body = {"inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP32", "data": [1, 2, 3, 4, 5, 6]}]}
    err = oip_error(formats.parse_request, body)
    assert str(err) == "inputs[0].shape: product 8 does not match 6 data elements"


@pytest.mark.parametrize(("tensor", "field"), [
    ({"shape": [1], "datatype": "FP32", "data": [1]}, "inputs[0].name"),
    ({"name": "x", "shape": [1], "datatype": "FLOAT", "data": [1]}, "inputs[0].datatype"),
    ({"name": "x", "shape": [1], "datatype": "FP32"}, "inputs[0].data"),
    ({"name": "x", "shape": [1], "datatype": "FP32", "data": 1}, "inputs[0].data"),
    ({"name": "x", "shape": "1", "datatype": "FP32", "data": [1]}, "inputs[0].shape"),
    ({"name": "x", "shape": [1.5], "datatype": "FP32", "data": [1]}, "inputs[0].shape[0]"),
    ({"name": "x", "shape": [3, 0], "datatype": "FP32", "data": []}, "inputs[0].shape"),
    ({"name": "x", "shape": [1], "datatype": "FP32", "data": [1], "parameters": 3}, "inputs[0].parameters"),
])
def test_oip_tensor_errors_name_the_field(tensor: dict[str, Any], field: str):
    assert oip_error(oip.parse_request, {"inputs": [tensor]}).field == field


def test_oip_batch_sizes_must_agree_and_names_be_unique():
    a = {"name": "a", "shape": [2], "datatype": "FP32", "data": [1, 2]}
    b = {"name": "b", "shape": [3], "datatype": "FP32", "data": [1, 2, 3]}
    err = oip_error(oip.parse_request, {"inputs": [a, b]})
    assert err.field == "inputs[1].shape" and "3 records" in err.reason
    assert oip_error(oip.parse_request, {"inputs": [a, a]}).field == "inputs[1].name"


def test_oip_probability_output():
    body = {"outputs": [{"name": "proba", "shape": [2, 3], "datatype": "FP64",
                         "data": [0.1, 0.2, 0.7, 0.5, 0.25, 0.25]},
                        {"name": "label", "shape": [2, 1], "datatype": "INT64", "data": [2, 0]}]}
    assert oip.parse_response(body) == [[0.1, 0.2, 0.7], [0.5, 0.25, 0.25]]
    assert oip.parse_response(body, "label") == [2, 0]
    assert oip_error(oip.parse_response, body, "nope").field == "outputs"


def test_oip_spec_example_is_rejected_as_published():
    request, response = json_blocks("oip/spec_infer_example.txt")
    err = oip_error(formats.parse_request, request.encode())
    # input1 declares shape [3] but sends one element
    assert str(err) == "inputs[1].shape: product 3 does not match 1 data elements"
    err = oip_error(formats.parse_response, response.encode())
    assert err.field == "body" and "not valid JSON" in err.reason
    repaired = response.replace('"42"\n', '"42",\n')
    assert formats.parse_response(repaired.encode()) == [[1.0, 1.1], [2.0, 2.1], [3.0, 3.1]]


def test_triton_binary_extension_is_refused_with_a_reason():
    request, response = json_blocks("triton/binary_data_extension_example.txt")
    err = oip_error(formats.parse_request, request.encode())
    assert err.field == "inputs[0].data" and "binary_data_size" in err.reason
    err = oip_error(formats.parse_response, response.encode())
    assert err.field == "outputs[0].data" and "binary" in err.reason


def test_triton_classification_strings():
    (response,) = json_blocks("triton/classification_extension_response.txt")
    err = oip_error(formats.parse_response, response.encode())
    assert err.field == "body" and "not valid JSON" in err.reason     # missing comma, as published
    body = json.loads(response.replace('"42"\n', '"42",\n'))
    assert body["outputs"][0]["datatype"] == "STRING"
    assert formats.parse_response(body) == ["index_1_label"]       # one record's top-2, best first
    batched = {"outputs": [{"name": "o", "shape": [2, 2], "datatype": "BYTES",
                            "data": ["0.2:0", "0.8:1", "0.9:4:cat", "0.1:2:dog"]}]}
    assert oip.parse_response(batched) == [1, "cat"]


def test_seldon_v2_grpc_json_tensors():
    values = kafka_values("seldon/v2_kafka_model_topics_inspect.txt")
    request = values["seldon.default.model.tfsimple1.inputs"]
    n, cols = formats.parse_request(request)
    assert n == 1 and list(cols) == ["INPUT0", "INPUT1"]
    assert cols["INPUT0"] == [list(range(1, 17))]
    response = values["seldon.default.model.tfsimple1.outputs"]
    assert formats.parse_response(response) == [list(range(2, 33, 2))]
    assert oip.model_info(response) == ("tfsimple1_1", "1")


def test_torchserve_v2_bytes():
    err = oip_error(formats.parse_request, load("torchserve/kserve_v2_bytes_request_NONCONFORMANT.json"))
    assert err.field == "inputs[0].shape" and "-1" in err.reason
    body = load("torchserve/kserve_v2_bytes_response.json")
    assert formats.parse_response(body) == [1]                      # shape [] is one record
    assert oip.model_info(body) == ("mnist", "1.0")


def test_bentoml_monitoring_logs_are_not_inference_bodies():
    # BentoML writes monitoring logs, not a wire protocol mlmon receives: a clear refusal.
    for line in fixture("bentoml/monitoring_data_iris.log").read_text().splitlines():
        err = oip_error(formats.parse_request, line)
        assert err.field == "body" and "'sepal length'" in err.reason
    err = oip_error(formats.parse_response, fixture("bentoml/monitoring_schema_text.log").read_bytes())
    assert err.field == "body"


def test_non_object_bodies():
    assert oip_error(formats.parse_request, b"[1, 2]").reason == "expected a JSON object, got array"
    assert oip_error(formats.parse_response, b"1").reason == "expected a JSON object, got number"
    assert oip_error(formats.parse_request, b"").field == "body"


def test_nan_tokens_from_python_servers_are_accepted():
    n, cols = formats.parse_request(b'{"instances": [[NaN, 1.0]]}')
    assert n == 1 and cols["f0"][0] != cols["f0"][0]


# ---- CloudEvents --------------------------------------------------------------------------

def test_kserve_logger_events_binary_and_structured():
    (req_attrs, req_data), (resp_attrs, resp_data) = event_display("kserve/v1_logger_event_display.txt")
    for encode in (as_binary, as_structured):
        req = formats.decode_event(*encode(req_attrs, req_data), received_at=100.0)
        resp = formats.decode_event(*encode(resp_attrs, resp_data), received_at=100.1)
        assert (req.kind, resp.kind) == ("request", "response")
        assert req.id == resp.id == req_attrs["id"] == resp_attrs["id"]
        assert req.model == "sklearn-iris" and req.namespace == "default"
        assert req.endpoint is None                     # sent empty
        assert req.server == "kserve" and req.received_at == 100.0
        assert resp.time - req.time == pytest.approx(
            iso_seconds(resp_attrs["time"]) - iso_seconds(req_attrs["time"]), abs=1e-6)
        rows = formats.rows_from_event(req, IRIS)
        assert rows.n_rows == 2 and rows.features["sepal_length"] == [6.8, 6.0]
        assert formats.rows_from_event(resp).predictions == [1, 1]


def test_kserve_derived_header_layout():
    fill = {"ce-id": "abc-123", "ce-source": "sklearn-iris-predictor-00001-deployment-x",
            "ce-time": "2025-01-02T03:04:05.123456789Z", "ce-recordedtime": "2025-01-02T03:04:05.2Z",
            "ce-inferenceservicename": "sklearn-iris", "ce-namespace": "ml", "ce-component": "predictor",
            "ce-endpoint": "", "ce-metadata": '{"X-Request-Id":["abc"]}', "content-type": "application/json",
            "ce-annotations": "{}"}
    headers = derived_headers("kserve/binary_mode_headers_DERIVED.txt", fill)
    assert headers["Ce-Type"] == "org.kubeflow.serving.inference.request"
    event = formats.decode_event(headers, fixture("kserve/v1_request_body.json").read_bytes())
    assert (event.id, event.kind, event.model, event.component) == ("abc-123", "request", "sklearn-iris", "predictor")
    assert event.attributes["metadata"] == '{"X-Request-Id":["abc"]}'
    assert event.time == pytest.approx(1735787045.123456789)


def test_seldon_logger_capture_pairs_on_requestid():
    (req_h, req_b), (resp_h, resp_b) = echo_capture("seldon/v1_logger_http_echo_capture.txt")
    assert req_b == fixture("seldon/v1_request_body.json").read_bytes()
    assert resp_b == fixture("seldon/v1_response_body.json").read_bytes()
    req, resp = formats.decode_event(req_h, req_b), formats.decode_event(resp_h, resp_b)
    assert req.event_id != resp.event_id                   # Seldon: one ce-id per event …
    assert req.id == resp.id == req_h["ce-requestid"]      # … paired by ce-requestid
    assert (req.model, req.component, req.server) == (req_h["ce-inferenceservicename"], "classifier", "seldon")
    assert formats.rows_from_event(req).features == {"f0": [1], "f1": [2], "f2": [5]}
    assert formats.rows_from_event(resp).predictions == [0.43782349911420193]


def test_seldon_request_logger_test_events():
    sent = curl_events("seldon/v1_request_logger_test_events.txt")
    events = [formats.decode_event(h, b) for h, b in sent]
    assert [e.kind for e in events] == ["request", "response"] * 3 + ["request"]
    assert [e.id for e in events] == [(lo := {k.lower(): v for k, v in h.items()}).get("ce-requestid") or lo["ce-id"]
                                       for h, _ in sent]
    assert len(set(e.id for e in events)) == 4              # three pairs and a lone request
    assert [e.model for e in events][::2] == ["tensor", "ndarray", "income", "iris"]
    tensor = formats.rows_from_event(events[0])
    assert tensor.n_rows == 2 and tensor.features == {"a": [1, 3], "b": [2, 4]}
    assert formats.rows_from_event(events[1]).predictions == [5, 6]
    assert formats.rows_from_event(events[3]).predictions == [7, 8]
    income = formats.rows_from_event(events[4])
    assert income.n_rows == 1 and len(income.features) == 12 and income.features["Hours per week"] == [
        json.loads(sent[4][1])["data"]["ndarray"][0][10]]
    data = json.loads(sent[5][1])["data"]
    assert formats.rows_from_event(events[5]).predictions == [dict(zip(["t:0", "t:1"], data["ndarray"][0],
                                                                       strict=True))]
    iris = formats.rows_from_event(events[6])
    assert iris.n_rows == 2 and iris.features["Petal Width"] == [1.4, 1.6]


def test_torchserve_png_event():
    (req_attrs, req_data), (resp_attrs, resp_data) = event_display("torchserve/kserve_logger_event_display_png.txt")
    assert req_attrs["datacontenttype"] == "application/json"   # labelled JSON, carries a PNG
    err = oip_error(formats.decode_event, *as_binary(req_attrs, req_data))
    assert err.field == "body" and "not valid JSON" in err.reason
    resp = formats.decode_event(*as_binary(resp_attrs, resp_data))
    assert resp.body == 1 and resp.model is None and resp.namespace == "kserve-test"
    err = oip_error(formats.rows_from_event, resp)
    assert err.field == "body" and "got number" in err.reason
    headers, body = as_binary(req_attrs, req_data)
    headers["Content-Type"] = "image/png"
    assert "image/png" in oip_error(formats.decode_event, headers, body).reason


@pytest.mark.parametrize(("change", "field", "needle"), [
    ({"Ce-Type": "foo"}, "ce-type", "unsupported event type 'foo'"),
    ({"Ce-Type": None}, "ce-type", "required"),
    ({"Ce-Specversion": "2.0"}, "ce-specversion", "2.0"),
    ({"Ce-Id": None}, "ce-id", "required"),
    ({"Content-Type": "application/cloudevents-batch+json"}, "content-type", "batched"),
])
def test_cloudevent_header_errors(change: dict[str, str | None], field: str, needle: str):
    (attrs, data), _ = event_display("kserve/v1_logger_event_display.txt")
    headers, body = as_binary(attrs, data)
    for k, v in change.items():
        if v is None:
            headers.pop(k)
        else:
            headers[k] = v
    err = oip_error(formats.decode_event, headers, body)
    assert err.field == field and needle in err.reason


def test_seldon_feedback_event_is_decoded_as_feedback():
    headers = {"Ce-Type": "io.seldon.serving.feedback", "Ce-Requestid": "p1", "Ce-Inferenceservicename": "m"}
    body = {"response": {"meta": {"puid": "p1"}}, "truth": {"data": {"ndarray": [["yes"], ["no"]]}}}
    event = formats.decode_event(headers, json.dumps(body).encode())
    assert (event.kind, event.id, event.server) == ("feedback", "p1", "seldon")
    assert kserve_v1.seldon_feedback(event.body) == ("p1", ["yes", "no"])
    assert oip_error(formats.rows_from_event, event).field == "ce-type"
    err = oip_error(kserve_v1.seldon_feedback, {"truth": {"data": {"ndarray": [[0.2, 0.8]]}}})
    assert err.field == "truth.data.ndarray[0]"


def test_seldon_json_and_str_data():
    assert kserve_v1.parse_request({"jsonData": {"a": [1, 2], "b": ["x", "y"]}}) == (2, {"a": [1, 2], "b": ["x", "y"]})
    assert kserve_v1.parse_request({"jsonData": [{"a": 1}, {"b": 2}]}) == (2, {"a": [1, None], "b": [None, 2]})
    assert kserve_v1.parse_request({"jsonData": {"a": 1, "b": "x"}}) == (1, {"a": [1], "b": ["x"]})
    assert kserve_v1.parse_request({"strData": '{"a": [3, 4]}'}) == (2, {"a": [3, 4]})
    assert kserve_v1.parse_response({"jsonData": {"label": ["no", "yes"]}}) == ["no", "yes"]
    assert "free text" in oip_error(kserve_v1.parse_request, {"strData": "the quick fox"}).reason
    assert "holds no table" in oip_error(kserve_v1.parse_request, {"jsonData": "x"}).reason
    assert oip_error(kserve_v1.parse_request, {"jsonData": {"a": [1], "b": [1, 2]}}).field == "jsonData.b"
    assert oip_error(kserve_v1.parse_request, {"binData": "AAEC"}).field == "binData"


def test_label_score_outputs():
    body = {"predictions": [{"label": "POSITIVE", "score": 0.98},
                            [{"label": "a", "score": 0.3}, {"label": "b", "score": 0.7}]]}
    assert kserve_v1.parse_response(body) == [{"POSITIVE": 0.98}, {"a": 0.3, "b": 0.7}]
    assert kserve_v1.parse_response({"jsonData": [{"label": "x", "score": 0.5}]}) == [{"x": 0.5}]
    assert kserve_v1.parse_response({"predictions": [{"label": "x", "score": 0.5, "extra": 1}]}) == [
        {"label": "x", "score": 0.5, "extra": 1}]                 # not the {label, score} shape: unchanged


def test_gzip_bodies():
    import gzip

    from exporter.formats._common import decompress_body

    raw = b'{"instances": [[1, 2]]}'
    assert decompress_body(gzip.compress(raw), "gzip", 1000) == raw
    assert decompress_body(gzip.compress(raw), None, 1000) == raw              # magic bytes
    assert decompress_body(raw, None, 1000) == raw
    assert "more than 100 bytes" in oip_error(decompress_body, gzip.compress(b" " * 5000), "gzip", 100).reason
    assert oip_error(decompress_body, raw, "br", 1000).field == "content-encoding"
    assert oip_error(decompress_body, b"\x1f\x8b\x08garbage", None, 1000).field == "body"


def test_structured_mode_variants():
    (attrs, data), _ = event_display("kserve/v1_logger_event_display.txt")
    ct = {"content-type": "application/cloudevents+json"}
    doc = {**attrs, "data_base64": base64.b64encode(data).decode()}
    assert formats.decode_event(ct, json.dumps(doc).encode()).body["instances"][0] == [6.8, 2.8, 4.8, 1.4]
    doc = {**attrs, "data": data.decode()}           # JSON body stored as a string by a relay
    assert formats.decode_event(ct, json.dumps(doc).encode()).body["instances"][1][0] == 6.0
    assert oip_error(formats.decode_event, ct, json.dumps(attrs).encode()).field == "data"
    bad64 = {**attrs, "data_base64": "***"}
    assert oip_error(formats.decode_event, ct, json.dumps(bad64).encode()).field == "data_base64"
    err = oip_error(formats.decode_event, ct, json.dumps({**attrs, "type": "x", "data": {}}).encode())
    assert err.field == "type"


def test_parse_time():
    assert parse_time("1970-01-01T00:00:01.5Z") == 1.5
    assert parse_time("1970-01-01T01:00:00+01:00") == 0.0
    assert parse_time("2021-04-10T00:23:26.080736102Z") == pytest.approx(1618014206.080736102)
    assert parse_time("yesterday") is None and parse_time("2021-13-01T00:00:00Z") is None


# ---- fuzzing: malformed input never raises anything but PayloadError ----------------------

JSON_FIXTURES = (
    "kserve/v1_request_body.json", "kserve/v1_response_body.json", "kserve/v1_request_mixed_types.json",
    "kserve/v2_request_body.json", "kserve/v2_response_body.json", "kserve/v2_request_named_columns.json",
    "kserve/v2_request_content_type_pd.json", "mlserver/inference-request.json",
    "mlserver/inference-response.json", "mlserver/bytes_request.json", "mlserver/request_with_id.json",
    "seldon/v1_request_body.json", "seldon/v1_response_body.json", "tfserving/predict_row_request.json",
    "tfserving/predict_row_response.json", "tfserving/predict_columnar_request.json",
    "tfserving/classify_b64_request.json", "torchserve/kserve_v2_bytes_response.json",
)
EXTRA_BODIES: tuple[Any, ...] = (
    {"data": {"names": ["a", "b"], "tensor": {"shape": [2, 2], "values": [1, 2, 3, 4]}}},
    {"results": [[["cat", 0.8], ["dog", 0.2]]]},
    {"outputs": [{"name": "o", "shape": [2, 2], "datatype": "BYTES", "data": ["0.2:0", "0.8:1", "0.9:4:c", "0.1:2"]}]},
    {"outputs": {"a": [[1], [2]], "b": [3, 4]}},
    {"inputs": [{"name": "I", "datatype": "INT32", "shape": ["1", "2"], "contents": {"intContents": [1, 2]}}]},
)
_DEEP: Any = 0
for _ in range(40):
    _DEEP = [_DEEP]
PALETTE: tuple[Any, ...] = (None, True, -1, 0, 3, 1.5, 1e308, "", "x", "0.9:3:lbl", "FP32", [], {}, [1, [2]],
                            [[1, 2], [3]], {"b64": 7}, {"b64": "eA=="}, [None], _DEEP, [{"a": 1}], {"a": [1]},
                            [10**30], ["1", "2"], {"status": "FAILURE"})


def _slots(doc: Any) -> list[tuple[Any, Any]]:
    out: list[tuple[Any, Any]] = []
    stack = [doc]
    while stack:
        node = stack.pop()
        items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
        for k, v in items:
            out.append((node, k))
            stack.append(v)
    return out


def mutate(doc: Any, rng: random.Random) -> Any:
    """A structurally plausible but wrong variant of ``doc``: one node replaced, removed or grown."""
    doc = copy.deepcopy(doc)
    slots = _slots(doc)
    if not slots or rng.random() < 0.05:
        return copy.deepcopy(rng.choice(PALETTE))
    parent, key = rng.choice(slots)
    action = rng.random()
    if action < 0.6:
        parent[key] = copy.deepcopy(rng.choice(PALETTE))
    elif action < 0.75:
        del parent[key]
    elif action < 0.9 and isinstance(parent[key], list):
        parent[key].append(copy.deepcopy(rng.choice(PALETTE)))
    else:
        parent[key] = [parent[key]]
    return doc


def mangle(raw: bytes, rng: random.Random) -> bytes:
    """Byte-level damage: truncation, or a few bytes replaced by JSON punctuation."""
    if rng.random() < 0.5:
        return raw[: rng.randrange(len(raw) + 1)]
    buf = bytearray(raw)
    for _ in range(rng.randint(1, 4)):
        buf[rng.randrange(len(buf))] = rng.choice(b'{}[]",:0-9e. \x00\xff')
    return bytes(buf)


def _check(fn: Any, *args: Any) -> None:
    try:
        result = fn(*args)
    except PayloadError:
        return
    if isinstance(result, tuple):                  # (n_rows, columns): every column has n entries
        n, cols = result
        assert all(len(col) == n for col in cols.values()), (args, result)
    elif isinstance(result, formats.EventRows):
        assert all(len(col) == result.n_rows for col in result.features.values())


PARSERS = (formats.parse_request, formats.parse_response, oip.parse_request, oip.parse_response,
           kserve_v1.parse_request, kserve_v1.parse_response)


def test_fuzz_bodies_only_raise_payload_error():
    bodies = [load(rel) for rel in JSON_FIXTURES if (payload_dir() / rel).is_file()]
    if not bodies:
        pytest.skip("no fixtures")
    bodies += list(EXTRA_BODIES)
    rng = random.Random(20240601)
    for body in bodies:
        raw = json.dumps(body).encode()
        for _ in range(60):
            variants = (mutate(body, rng), mangle(raw, rng))
            for variant in variants:
                for fn in PARSERS:
                    _check(fn, variant)
                _check(formats.parse_request, variant, IRIS)


def test_fuzz_events_only_raise_payload_error():
    captures = []
    for rel in ("kserve/v1_logger_event_display.txt", "torchserve/kserve_logger_event_display_png.txt"):
        if (payload_dir() / rel).is_file():
            captures += [as_binary(a, d) for a, d in event_display(rel)]
    for rel in ("seldon/v1_logger_http_echo_capture.txt",):
        if (payload_dir() / rel).is_file():
            captures += echo_capture(rel)
    if not captures:
        pytest.skip("no fixtures")
    rng = random.Random(7)
    for headers, body in captures:
        for _ in range(80):
            h = dict(headers)
            name = rng.choice(list(h))
            roll = rng.random()
            if roll < 0.3:
                h.pop(name)
            elif roll < 0.6:
                h[name] = rng.choice(["", "foo", "1.0", "application/cloudevents+json", "%zz", "9" * 2000,
                                      "org.kubeflow.serving.inference.response", "2021-02-30T00:00:00Z"])
            b = mangle(body, rng) if rng.random() < 0.5 else body
            try:
                event = formats.decode_event(h, b)
            except PayloadError:
                continue
            _check(formats.rows_from_event, event, IRIS)
            try:
                mutated = json.loads(b)
            except ValueError:
                continue
            structured = {"type": event.type, "id": event.id, "specversion": "1.0", "data": mutate(mutated, rng)}
            try:
                event = formats.decode_event({"content-type": "application/cloudevents+json"},
                                             json.dumps(structured).encode())
            except PayloadError:
                continue
            _check(formats.rows_from_event, event)
