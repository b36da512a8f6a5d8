"""The simdjson columnar path and the fused numeric block change speed, never results.

- ``load_columnar`` returns exactly what orjson returns (numeric columns as the same floats), or
  None, on generated bodies full of the things it must refuse: nested arrays in numeric columns,
  nulls, booleans, strings with ``[``, escaped and repeated keys, huge integers.
- A whole prediction request prepared through it gives the same count vector, data quality and
  ids as one parsed by ``load_json``.
- ``encode_numeric_block`` counts and bins as the per-column path does, with a plain
  ``np.searchsorted`` as the reference.
- The predicted classes counted from the prediction's bins, and their outcome indices, equal a
  ``Counter`` of the labels and the tracker's own lookup.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pytest
from helpers import shop_model, training_frame
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.baseline import build_baseline
from exporter.batch import Batch
from exporter.formats._common import load_json
from exporter.formats.fastjson import load_columnar, simdjson
from exporter.formats.native import parse_predictions
from exporter.monitor import ModelMonitor
from exporter.offload import prepare_body
from exporter.profile import NumericProfile
from exporter.quality import NumericBlock, encode, encode_numeric_block

pytestmark = pytest.mark.skipif(simdjson is None, reason="pysimdjson is not installed")

NUMERIC = frozenset({"age", "income", "visits"})


def numeric(model: str) -> frozenset[str]:
    return NUMERIC if model == "shop" else frozenset()


def same_as_orjson(body: bytes) -> bool:
    """load_columnar(body) is None or equals orjson's result, arrays read as lists of floats."""
    fast = load_columnar(body, numeric)
    if fast is None:
        return False
    slow = orjson.loads(body)
    for name, column in fast["features"].items():
        if isinstance(column, np.ndarray):
            original = slow["features"][name]
            assert all(type(v) in (int, float) for v in original), (name, original)
            np.testing.assert_array_equal(column, np.array(original, dtype=np.float64))
            fast["features"][name] = slow["features"][name]
    assert fast == slow
    return True


def test_a_plain_columnar_body_takes_the_fast_path_with_float_arrays() -> None:
    body = {"model": "shop", "version": "v2", "ids": ["a", "b", "c"],
            "features": {"age": [31, 40.5, -2e-3], "income": [1e5, 2, 3], "plan": ["pro", "basic", "[x]"],
                         "visits": [1, 2, 3]},
            "predictions": [{"yes": 0.9, "no": 0.1}, "no", ["nested", ["list"]]], "latency_seconds": [0.1, 0.2, None]}
    raw = json.dumps(body).encode()
    fast = load_columnar(raw, numeric)
    assert fast is not None
    assert {k for k, v in fast["features"].items() if isinstance(v, np.ndarray)} == NUMERIC
    assert same_as_orjson(raw)


@pytest.mark.parametrize("raw", [
    b'{"model": "shop", "features": {"age": [[1], 2, 3]}}',              # a one-number list inside a numeric column
    b'{"model": "shop", "features": {"age": [[], [1, 2]]}}',             # as many numbers as entries, still nested
    b'{"model": "shop", "features": {"age": [1, 2], "age": [3, 4]}}',    # a repeated feature: orjson keeps the last
    b'{"model": "shop", "model": "other", "features": {"age": [1]}}',
    b'{"model": "shop", "features": {"ag\\u0065": [1, 2]}}',             # an escaped key
    b'{"model": "shop", "features": {"age": [1, NaN]}}',                 # not JSON: load_json's lenient path
    b'{"model": "shop", "features": {"age": [123456789012345678901234567890]}}',
    b'{"model": "shop", "records": [], "features": {}}',
    b'{"model": "shop", "features": [1, 2]}',
    b'[1, 2]',
    b'',
    b'{"model": "shop", "features": {"age": [1, 2]}',
])
def test_bodies_it_must_not_read_go_to_load_json(raw: bytes) -> None:
    fast = load_columnar(raw, numeric)
    if fast is not None:  # allowed only where it equals what orjson reads
        assert same_as_orjson(raw)
        assert not any(isinstance(v, np.ndarray) and len(v) != len(orjson.loads(raw)["features"][k])
                       for k, v in fast["features"].items())


def test_a_column_with_a_null_or_boolean_stays_a_list() -> None:
    raw = b'{"model": "shop", "features": {"age": [1, null], "income": [true, 2], "visits": [1, "2"]}}'
    fast = load_columnar(raw, numeric)
    assert fast is not None and all(isinstance(v, list) for v in fast["features"].values())
    assert same_as_orjson(raw)


scalars = st.one_of(
    st.integers(-2**70, 2**70), st.floats(allow_nan=False, allow_infinity=False), st.booleans(), st.none(),
    st.text(alphabet="ab[]\\\"\x00é", max_size=4))
values = st.one_of(scalars, st.lists(scalars, max_size=2), st.dictionaries(st.text("ab[", max_size=2), scalars,
                                                                            max_size=2))
number_or_odd = st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.integers(-2**53, 2**53), values)


@settings(max_examples=300, deadline=None)
@given(
    n=st.integers(0, 6),
    data=st.data(),
    extra=st.dictionaries(st.text("xyz[", min_size=1, max_size=3), values, max_size=2),
)
def test_load_columnar_equals_orjson_or_declines(n: int, data: st.DataObject, extra: dict[str, Any]) -> None:
    features = {name: data.draw(st.lists(number_or_odd, min_size=n, max_size=n), label=name)
                for name in ("age", "income", "plan", "x[0]")}
    body = {"model": "shop", "ids": [f"r{i}" for i in range(n)], "features": features,
            "predictions": data.draw(st.lists(values, min_size=n, max_size=n)), **extra}
    try:
        raw = orjson.dumps(body)
    except orjson.JSONEncodeError:  # an integer beyond 64 bits: orjson cannot write it either
        raw = json.dumps(body).encode()
    if load_columnar(raw, numeric) is not None:
        assert same_as_orjson(raw)


@pytest.fixture(scope="module")
def monitor() -> ModelMonitor:
    baseline = build_baseline(training_frame(5000), "shop", prediction="prediction", target="target")
    return ModelMonitor(shop_model(), baseline)


def _body(rng: np.random.Generator, n: int, odd: bool) -> bytes:
    frame = training_frame(n, seed=int(rng.integers(1 << 30)))
    features: dict[str, list[Any]] = {c: frame[c].tolist() for c in ("age", "income", "visits", "plan", "country")}
    features["income"] = [v * 3 for v in features["income"]]  # some out of the training range
    if odd:
        features["age"][0] = None
        features["age"][1] = "41"
        features["visits"][2] = True
        features["plan"][3] = ["pro"]
        features["new_feature"] = list(range(n))
        del features["country"]
    latency = rng.uniform(0, 0.2, n).tolist()
    if odd:
        latency[4], latency[5] = -1, 1e6  # refused records: the rest of the batch is kept
    return orjson.dumps({"model": "shop", "version": "v1", "ids": [f"id-{i}" for i in range(n)],
                        "features": features, "predictions": frame["prediction"].tolist(),
                        "latency_seconds": latency})


@pytest.mark.parametrize("odd", [False, True])
def test_a_request_prepared_through_it_equals_one_parsed_by_load_json(monitor: ModelMonitor, odd: bool) -> None:
    rng = np.random.default_rng(int(odd))
    raw = _body(rng, 500, odd)
    kind, model, fast = prepare_body(raw, None, 1 << 24, {"shop": monitor})
    assert kind == "ok" and model == "shop"
    slow = monitor.prepare(parse_predictions(load_json(raw)))
    np.testing.assert_array_equal(fast.vector, slow.vector)
    np.testing.assert_array_equal(fast.quality, slow.quality)
    np.testing.assert_array_equal(fast.lat_counts, slow.lat_counts)
    assert (fast.size, fast.ids, fast.pred_keys, fast.unknown, fast.unknown_values, fast.rejected, fast.slo_add,
            fast.latency_sum) == (slow.size, slow.ids, slow.pred_keys, slow.unknown, slow.unknown_values,
                                  slow.rejected, slow.slo_add, slow.latency_sum)
    assert isinstance(load_columnar(raw, numeric)["latency_seconds"], np.ndarray)
    assert load_columnar(raw, lambda m: monitor.numeric_features) is not None  # the fast path was taken
    if odd:
        assert slow.quality.sum() > 0 and len(slow.rejected) == 2


def test_the_numeric_block_counts_as_the_per_column_path_and_searchsorted(monitor: ModelMonitor) -> None:
    rng = np.random.default_rng(3)
    profiles = [p for p in monitor.profiles if isinstance(p, NumericProfile) and p.edge_lookup.uses_grid]
    assert {p.name for p in profiles} == NUMERIC
    offsets = [1000 * (j + 1) for j in range(len(profiles))]
    n = 400
    columns: list[Any] = []
    for p in profiles:
        values: list[Any] = rng.normal(p.mean, 3 * p.std + 1, n).tolist()
        values[:8] = [None, float("nan"), "7", True, [1], 10**400, p.min, p.max]
        columns.append(values)
    columns.append(None)  # an absent feature
    profiles.append(profiles[0])
    offsets.append(9000)
    block = NumericBlock.of(profiles, offsets)
    bins, quality = encode_numeric_block(block, columns, n)
    expected_bins = []
    for j, (p, column) in enumerate(zip(profiles, columns, strict=True)):
        if column is None:
            np.testing.assert_array_equal(quality[j], [n, 0, 0, 0])
            continue
        enc = encode(p, column)
        np.testing.assert_array_equal(quality[j], [enc.missing, enc.type_errors, enc.out_of_range, enc.unexpected])
        usable = np.array([v for v in map(_number, column) if v is not None])
        reference = np.searchsorted(p.edges, usable, side="left") + offsets[j]
        np.testing.assert_array_equal(np.sort(enc.bins + offsets[j]), np.sort(reference))
        expected_bins.append(reference)
    np.testing.assert_array_equal(np.sort(bins), np.sort(np.concatenate(expected_bins)))


def _number(v: Any) -> float | None:
    """A value as the monitor reads a number: booleans are 0/1; strings, lists, None and non-finite are not."""
    if isinstance(v, (bool, int, float)) and not isinstance(v, str):
        try:
            f = float(v)
        except OverflowError:
            return None
        return f if np.isfinite(f) else None
    return None


def test_predicted_classes_from_the_prediction_bins_equal_counting_them(monitor: ModelMonitor) -> None:
    """prepare() counts classes and finds their outcome indices from the prediction's bins; the
    result equals a Counter of the labels and the tracker's own lookup, unseen classes included."""
    rng = np.random.default_rng(11)
    n = 200
    predictions = rng.choice(["yes", "no", "maybe", "x[1]"], n, p=[0.4, 0.4, 0.15, 0.05]).tolist()
    batch = Batch(model="shop", version="v1", size=n, features={"age": rng.normal(40, 9, n).tolist()},
                  predictions=predictions, ids=[f"k{i}" for i in range(n)])
    prepared = monitor.prepare(batch)
    assert prepared.classes == Counter(predictions)
    assert monitor.outcomes.class_index.frozen and prepared.pred_class is not None
    np.testing.assert_array_equal(prepared.pred_class, monitor.outcomes.class_index.indices(predictions))
    predictions[0] = None  # a record without a prediction: the general path, same answers
    prepared = monitor.prepare(Batch(model="shop", version="v1", size=n, features={}, predictions=predictions))
    expected = Counter(predictions)
    del expected[None]
    assert prepared.classes == expected and prepared.pred_class is None


def test_a_class_beyond_the_prediction_profiles_top_k_keeps_its_own_index() -> None:
    """With more classes than the profile keeps by name, a known class falls into the profile's
    __other__ bin; its outcome index must still be its own, not the overflow slot."""
    rng = np.random.default_rng(2)
    frame = pd.DataFrame({"age": rng.normal(40, 9, 3000),
                          "prediction": rng.choice(["a", "b", "c"], 3000, p=[0.6, 0.3, 0.1])})
    baseline = build_baseline(frame, "shop", prediction="prediction", top_k=2)
    monitor = ModelMonitor(shop_model(), baseline)
    assert "c" not in baseline.prediction.categories and "c" in monitor.outcomes.classes
    predictions = rng.choice(["a", "b", "c", "zz"], 100).tolist()
    prepared = monitor.prepare(Batch(model="shop", version="v1", size=100, features={}, predictions=predictions))
    np.testing.assert_array_equal(prepared.pred_class, monitor.outcomes.class_index.indices(predictions))


def test_mutated_bodies_get_the_same_answer_with_and_without_the_fast_path(
        monitor: ModelMonitor, monkeypatch: pytest.MonkeyPatch) -> None:
    """Differential check on 3,000 small columnar bodies with random bytes changed (JSON tokens,
    truncations): prepare_body through simdjson and through load_json alone give the same kind of
    answer, the same refusal (field and reason) and the same counts. It found a length error worded
    differently for latencies read as an array."""
    import random

    from exporter import offload

    rng = random.Random(4)
    bodies = [_body(np.random.default_rng(n), n, odd=n == 8) for n in (1, 8, 40)]
    taken = 0
    for _ in range(3000):
        b = bytearray(rng.choice(bodies))
        for _ in range(rng.randint(1, 6)):
            b[rng.randrange(len(b))] = rng.choice(b'[]{},:"0123456789.eE-+ntfal\\ ')
        raw = bytes(b)
        taken += load_columnar(raw, numeric) is not None
        fast = prepare_body(raw, None, 1 << 24, {"shop": monitor})
        with monkeypatch.context() as m:
            m.setattr(offload, "load_columnar", lambda body, names: None)
            slow = prepare_body(raw, None, 1 << 24, {"shop": monitor})
        assert fast[0] == slow[0], (raw, fast, slow)
        if fast[0] == "ok":
            np.testing.assert_array_equal(fast[2].vector, slow[2].vector)
            np.testing.assert_array_equal(fast[2].quality, slow[2].quality)
            assert (fast[2].ids, fast[2].rejected) == (slow[2].ids, slow[2].rejected)
        else:
            assert fast[1:] == slow[1:], raw
    assert taken > 100  # the fast path did read a good share of them
