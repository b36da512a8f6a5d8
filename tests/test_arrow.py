"""``POST /v1/predictions`` as an Arrow IPC stream: the columnar form with typed columns.

The same records sent as JSON and as Arrow give the same prepared batch (counts, data quality,
ids, refused records), whatever Arrow types a sender picks (dictionary strings, booleans,
integers with nulls, a null struct row); over HTTP the stream is counted, and a broken one, a
stream without a model, or pyarrow missing on the sidecar get a clear 4xx.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
import requests
from helpers import metric

from exporter.formats import arrow
from exporter.formats._common import load_json
from exporter.formats.native import parse_predictions
from exporter.monitor import ModelMonitor
from exporter.offload import prepare_body

pa = pytest.importorskip("pyarrow")
STREAM = arrow.MEDIA_TYPE


def stream(columns: dict[str, Any], model: str | None = "shop", version: str | None = "v1",
           chunks: int = 1) -> bytes:
    """An Arrow IPC stream of ``columns`` (pyarrow arrays or Python lists), split into ``chunks`` record batches."""
    table = pa.table(columns)
    meta = {k: v for k, v in (("model", model), ("version", version)) if v is not None}
    table = table.replace_schema_metadata(meta)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        for batch in table.to_batches(max_chunksize=max(1, -(-table.num_rows // chunks))):
            writer.write_batch(batch)
    return bytes(sink.getvalue().to_pybytes())


def struct(children: dict[str, Any], mask: list[bool] | None = None) -> Any:
    arrays = [v if isinstance(v, pa.Array) else pa.array(v) for v in children.values()]
    return pa.StructArray.from_arrays(arrays, names=list(children),
                                      mask=None if mask is None else pa.array(mask, pa.bool_()))


def json_equivalent(columns: dict[str, Any], struct_nulls: list[bool] | None = None) -> bytes:
    """The same records in the JSON columnar form (a null struct row: every feature null)."""
    body: dict[str, Any] = {"model": "shop", "version": "v1"}
    for name, values in columns.items():
        values = values.to_pylist() if isinstance(values, pa.Array) else values
        if name in ("features", "groups"):
            values = {k: [None if struct_nulls and struct_nulls[i] else row[k] if row else None
                          for i, row in enumerate(values)] for k in values[0]}
        body[name] = values
    return json.dumps(body).encode()


@pytest.fixture
def monitor(small_baseline: Any) -> ModelMonitor:
    from helpers import shop_model

    return ModelMonitor(shop_model(), small_baseline)


def _same_prepared(monitor: ModelMonitor, arrow_body: bytes, json_body: bytes) -> None:
    kind, model, fast = prepare_body(arrow_body, None, 1 << 24, {"shop": monitor}, STREAM)
    assert kind == "ok" and model == "shop", (kind, model, fast)
    slow = monitor.prepare(parse_predictions(load_json(json_body)))
    np.testing.assert_array_equal(fast.vector, slow.vector)
    np.testing.assert_array_equal(fast.quality, slow.quality)
    np.testing.assert_array_equal(fast.lat_counts, slow.lat_counts)
    assert (fast.size, fast.version, fast.ids, fast.pred_keys, fast.rejected, fast.unknown, fast.unknown_values,
            fast.groups, fast.errors) == (slow.size, slow.version, slow.ids, slow.pred_keys, slow.rejected,
                                          slow.unknown, slow.unknown_values, slow.groups, slow.errors)


def test_an_arrow_stream_prepares_as_the_same_json_does(monitor: ModelMonitor) -> None:
    rng = np.random.default_rng(5)
    n = 300
    plans = rng.choice(["basic", "plus", "pro", "gold"], n).tolist()  # "gold" was never seen in training
    plans[3] = None
    features = {
        "age": pa.array([*rng.normal(40, 15, n).tolist()[:-1], None]),     # float64 with a null
        "income": pa.array(rng.integers(0, 90_000, n), pa.int64()),         # integers, some out of range
        "visits": pa.array(rng.random(n) < 0.3),                           # booleans read as 0/1
        "plan": pa.array(plans).dictionary_encode(),                       # a dictionary column
        "country": pa.array(rng.choice(["de", "fr", "it", "es"], n).tolist()),
        "new_feature": pa.array(rng.integers(0, 5, n), pa.int32()),        # not in the baseline
    }
    latency = rng.uniform(0, 0.3, n).tolist()
    latency[7] = -1.0  # refused: the rest is kept
    columns = {"ids": [f"r{i}" for i in range(n)], "features": struct(features),
               "predictions": rng.choice(["yes", "no"], n).tolist(), "latency_seconds": latency,
               "errors": (rng.random(n) < 0.05).tolist(), "groups": struct({"region": rng.choice(["n", "s"], n)})}
    raw = stream(columns, chunks=3)
    _same_prepared(monitor, raw, json_equivalent(columns))
    kind, _, prepared = prepare_body(raw, None, 1 << 24, {"shop": monitor}, STREAM)
    assert kind == "ok"
    assert len(prepared.rejected) == 1 and prepared.rejected[0].index == 7
    assert prepared.quality.sum() > 0  # missing, out of range and unexpected values were counted


def test_a_null_struct_row_counts_every_feature_missing(monitor: ModelMonitor) -> None:
    features = {"age": [30.0, 41.0, 52.0], "plan": ["pro", "basic", "plus"]}
    nulls = [False, True, False]
    columns = {"ids": ["a", "b", "c"], "features": struct(features, mask=nulls), "predictions": ["yes", "no", "no"]}
    _same_prepared(monitor, stream(columns), json_equivalent(columns, struct_nulls=nulls))


@pytest.mark.parametrize(("raw", "field"), [
    (b"not an arrow stream", "$"),
    (stream({"ids": ["a"], "features": struct({"age": [1.0]})}, model=None), "model"),
    (stream({"ids": ["a"], "features": pa.array([1.0])}), "features"),
])
def test_bad_streams_are_refused_naming_the_field(monitor: ModelMonitor, raw: bytes, field: str) -> None:
    kind, where, _ = prepare_body(raw, None, 1 << 24, {"shop": monitor}, STREAM)
    assert (kind, where) == ("payload", field)


def test_an_arrow_stream_is_counted_over_http(live_server: Any) -> None:
    n = 40
    columns = {"ids": [f"h{i}" for i in range(n)],
               "features": struct({"age": [35.0] * n, "income": [2e4] * n, "visits": [2] * n,
                                   "plan": ["pro"] * n, "country": ["de"] * n}),
               "predictions": ["yes"] * n, "latency_seconds": [0.05] * n, "errors": [False] * (n - 1) + [True]}
    r = requests.post(live_server.url + "/v1/predictions", data=stream(columns, version="v7"),
                      headers={"Content-Type": STREAM}, timeout=10)
    assert r.status_code == 200, r.text
    assert r.json()["accepted"] == n and r.json()["rejected"] == []
    assert metric(live_server, "mlmon_predictions_total", model="shop", version="v7") == n
    assert metric(live_server, "mlmon_prediction_errors_total", model="shop", version="v7") == 1

    r = requests.post(live_server.url + "/v1/predictions", data=b"\x00" * 64, headers={"Content-Type": STREAM},
                      timeout=10)
    assert r.status_code == 400 and r.json()["field"] == "$"
    r = requests.post(live_server.url + "/v1/predictions", data=stream(columns, model="nope"),
                      headers={"Content-Type": STREAM}, timeout=10)
    assert r.status_code == 404
    r = requests.post(live_server.url + "/v1/labels", data=stream(columns), headers={"Content-Type": STREAM},
                      timeout=10)
    assert r.status_code == 415  # only the predictions route reads Arrow


def test_without_pyarrow_an_arrow_stream_is_415(live_server: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(arrow, "available", lambda: False)
    r = requests.post(live_server.url + "/v1/predictions", data=b"\x00" * 64, headers={"Content-Type": STREAM},
                      timeout=10)
    assert r.status_code == 415 and "pyarrow" in r.json()["error"]


def test_the_readme_recipe_from_a_pandas_frame(live_server: Any) -> None:
    """README "Arrow form": features straight from a DataFrame (pandas strings arrive as large_string,
    a category column as a dictionary)."""
    from helpers import training_frame

    frame = training_frame(200, seed=9)
    frame["plan"] = frame["plan"].astype("category")
    names = ["age", "income", "visits", "plan", "country"]
    features = pa.RecordBatch.from_pandas(frame[names], preserve_index=False)
    table = pa.table({"ids": [f"p{i}" for i in range(200)], "features": features.to_struct_array(),
                      "predictions": frame["prediction"].tolist(), "latency_seconds": [0.01] * 200})
    table = table.replace_schema_metadata({"model": "shop", "version": "pandas"})
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    r = requests.post(live_server.url + "/v1/predictions", data=sink.getvalue().to_pybytes(),
                      headers={"Content-Type": STREAM}, timeout=10)
    assert r.status_code == 200, r.text
    assert r.json()["accepted"] == 200 and sum(r.json()["data_quality"].values()) == 0
    assert metric(live_server, "mlmon_predictions_total", model="shop", version="pandas") == 200


_FUZZ = """
import json, random, sys
sys.path.insert(0, "tests")
from helpers import shop_model, training_frame
from test_arrow import stream, struct
from exporter.baseline import build_baseline
from exporter.monitor import ModelMonitor
from exporter.offload import prepare_body
monitor = ModelMonitor(shop_model(), build_baseline(training_frame(2000), "shop", prediction="prediction"))
rng = random.Random(int(sys.argv[1]))
bodies = []
for n in (1, 9, 120):
    frame = training_frame(n, seed=n)
    features = struct({name: frame[name].tolist() for name in ("age", "income", "visits", "plan", "country")})
    bodies.append(stream({"ids": [f"f{i}" for i in range(n)], "features": features,
                          "predictions": frame["prediction"].tolist(), "latency_seconds": [0.01] * n}))
kinds = set()
for _ in range(int(sys.argv[2])):
    b = bytearray(rng.choice(bodies))
    if rng.random() < 0.7:
        for _ in range(rng.randint(1, 16)):
            b[rng.randrange(len(b))] = rng.randrange(256)
    else:
        del b[rng.randrange(len(b)):]
    kinds.add(prepare_body(bytes(b), None, 1 << 24, {"shop": monitor}, "application/vnd.apache.arrow.stream")[0])
print(json.dumps(sorted(kinds)))
"""


def test_corrupted_streams_are_refused_not_crashed_on() -> None:
    """pyarrow trusts a stream's offsets unless told to validate them: without ``validate(full=True)``
    a few flipped bytes made the reading segfault (the whole sidecar). Run in a child process, so a
    crash fails this test instead of ending the run."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    result = subprocess.run([sys.executable, "-c", _FUZZ, "7", "1500"], cwd=root, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, (result.returncode, result.stderr[-2000:])
    assert set(json.loads(result.stdout)) <= {"ok", "payload", "unknown_model"}
