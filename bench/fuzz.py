"""Schemathesis fuzzing of every route in ``GET /openapi.json`` against a live sidecar: 0 × 5xx.

Each operation gets ``--examples`` schema-conforming cases and, for operations with something to
break, as many schema-violating ones (schemathesis's positive and negative modes, driven by
hypothesis). Afterwards ``/metrics`` and ``/v1/models`` must answer 200 and ``promtool check
metrics`` must accept the exposition: nothing accepted may break a later read. The reference in
the same run is the status mix itself (how many cases reached ingest, 2xx, versus a 4xx refusal).

    .venv/bin/python bench/fuzz.py --examples 500      # issue 9 acceptance: 1,000 per POST endpoint

The test suite runs the same ``fuzz`` with fewer examples (tests/test_fuzz.py).
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import requests


def fuzz(url: str, examples: int, seed: int = 0) -> dict[str, Counter[int]]:
    """``{"POST /v1/predictions positive": Counter(status → count), ...}`` for every operation and mode."""
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from hypothesis import seed as fixed_seed
    from hypothesis.errors import Unsatisfiable
    from schemathesis import GenerationMode

    schema = schemathesis.openapi.from_url(url + "/openapi.json")
    out: dict[str, Counter[int]] = {}
    current = [""]
    for result in schema.get_all_operations():
        op = result.ok()
        modes = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE) if op.method.upper() == "POST" else (
            GenerationMode.POSITIVE,)
        for mode in modes:
            out[f"{op.method.upper()} {op.path} {mode.value}"] = Counter()
            current[0] = mode.value

            @fixed_seed(seed)
            @given(case=op.as_strategy(generation_mode=mode))
            @settings(max_examples=examples, database=None, deadline=None, derandomize=False,
                      suppress_health_check=list(HealthCheck))
            def run(case) -> None:
                tally = out[case.operation.method.upper() + " " + case.operation.path + " " + current[0]]
                try:
                    tally[case.call(base_url=url, timeout=30).status_code] += 1
                except requests.RequestException:
                    tally[0] += 1  # no answer at all counts against the run, like a 5xx

            with contextlib.suppress(Unsatisfiable):
                run()
    return out


def check_reads(url: str) -> dict[str, object]:
    """After fuzzing: the reads still answer and the exposition is valid for promtool."""
    metrics = requests.get(url + "/metrics", timeout=10)
    models = requests.get(url + "/v1/models", timeout=10)
    promtool = shutil.which("promtool")
    lint = None
    if promtool and metrics.status_code == 200:
        proc = subprocess.run([promtool, "check", "metrics"], input=metrics.content, capture_output=True, timeout=60)
        lint = (proc.returncode, (proc.stdout + proc.stderr).decode(errors="replace"))
    return {"metrics": metrics.status_code, "models": models.status_code, "metrics_bytes": len(metrics.content),
            "promtool": lint}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=500, help="cases per operation and mode")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import _common

    _common.print_machine()
    service, listener = _common.start_listener()
    started = time.perf_counter()
    try:
        result = fuzz(listener.url, args.examples, args.seed)
        reads = check_reads(listener.url)
    finally:
        service.stop()
        listener.close()
    elapsed = time.perf_counter() - started
    total = sum(sum(c.values()) for c in result.values())
    print(f"\n{total} requests in {elapsed:.0f} s ({total / elapsed:.0f} requests/s)\n")
    print("| operation | mode | requests | 2xx | 4xx | 5xx or no answer |")
    print("|---|---|---|---|---|---|")
    bad = 0
    per_post: Counter[str] = Counter()
    for key, codes in result.items():
        method, path, mode = key.split()
        n = sum(codes.values())
        fives = sum(v for k, v in codes.items() if k >= 500 or k == 0)
        bad += fives
        if method == "POST":
            per_post[path] += n
        print(f"| {method} {path} | {mode} | {n} | {sum(v for k, v in codes.items() if 200 <= k < 300)} | "
              f"{sum(v for k, v in codes.items() if 400 <= k < 500)} | {fives} |")
    lint_ok = reads["promtool"] is None or reads["promtool"][0] == 0
    print(f"\nafter the run: /metrics {reads['metrics']} ({reads['metrics_bytes']} bytes), "
          f"/v1/models {reads['models']},"
          f" promtool check metrics: {'not installed' if reads['promtool'] is None else reads['promtool'][0]}")
    if reads["promtool"] and reads["promtool"][1].strip():
        print(reads["promtool"][1][:2000])
    ok = bad == 0 and reads["metrics"] == 200 and reads["models"] == 200 and lint_ok
    ok &= all(n >= 2 * args.examples * 0.9 for n in per_post.values())
    print(f"requests per POST endpoint: {dict(per_post)}")
    print(f"target: 0 x 5xx, reads 200, promtool clean: {'met' if ok else 'NOT met'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
