"""Self-monitoring and the /metrics body: what the sidecar itself costs, in one place.

The registry is custom (no default collectors), so the process (CPU, memory, file descriptors),
platform and garbage-collector collectors are added here, together with the time a scrape takes
to render, which the dashboards' resource row and the runbooks ("raise the memory limit") read.
The evaluation duration is exported per model by the collector (``mlmon_evaluation_duration_seconds``).

A scrape negotiates as prometheus_client's ``make_wsgi_app`` does: OpenMetrics text when the
``Accept`` header asks for it, gzip when ``Accept-Encoding`` allows it. mlmon's own families come
from the collector's cached text (exporter/metrics.py); these few self-monitoring ones are encoded
by prometheus_client on every scrape.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client import (
    GC_COLLECTOR,
    CollectorRegistry,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.exposition import choose_encoder, gzip_accepted

from exporter.contract import spec
from exporter.exposition import Part, gzipped, plain

SCRAPE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
GZIP_LEVEL = 6
"""For text cached across scrapes (settings, evaluations): compressed once, so zlib's default."""
GZIP_FRESH_LEVEL = 1
"""For the text new in each scrape (live counters, ~40 % of it): 3x less CPU than level 6 for ~8 %
more bytes on the whole body (10 models x 50 features, bench/scrape.py)."""
OPENMETRICS = "application/openmetrics-text"


@dataclass(frozen=True)
class Exposition:
    body: bytes
    content_type: str
    gzipped: bool


class SelfMonitor:
    """Registers the process/platform/GC collectors, renders /metrics and times every exposition.

    ``text(openmetrics)``, when given, is the collector's cached text (``MlmonCollector.text``);
    without it the whole ``registry`` is encoded by prometheus_client (the uncached path).
    """

    def __init__(self, registry: CollectorRegistry, text: Callable[[bool], list[Part]] | None = None) -> None:
        self.registry = registry
        self._text = text
        self._own = CollectorRegistry(auto_describe=False)
        """The self-monitoring collectors alone (also in ``registry``), for the cached path."""
        collectors: list[object] = [ProcessCollector(registry=registry), PlatformCollector(registry=registry)]
        if GC_COLLECTOR is not None:  # None on interpreters without gc statistics
            collectors.append(GCCollector(registry=registry))
        # The histogram is the contract's _bucket/_sum/_count only: no extra _created gauge (the
        # collector's families have none either).
        disable_created_metrics()
        declared = spec("mlmon_scrape_duration_seconds")
        self.scrape_duration = Histogram(declared.name, declared.help, buckets=SCRAPE_BUCKETS, registry=registry)
        for collector in (*collectors, self.scrape_duration):
            self._own.register(collector)  # type: ignore[arg-type]

    def exposition(self, accept: str | None = None, accept_encoding: str | None = None) -> Exposition:
        """The /metrics body for these request headers (the plain text format when both are absent)."""
        start = time.perf_counter()
        encoder, content_type = choose_encoder(accept or "")
        if self._text is None:
            parts: list[Part] = [encoder(self.registry)]
        else:
            # The self-monitoring families last: in OpenMetrics they end with "# EOF".
            parts = [*self._text(content_type.startswith(OPENMETRICS)), encoder(self._own)]
        zipped = gzip_accepted(accept_encoding or "")
        body = gzipped(parts, GZIP_LEVEL, GZIP_FRESH_LEVEL) if zipped else plain(parts)
        self.scrape_duration.observe(time.perf_counter() - start)
        return Exposition(body, content_type, zipped)

    def uncached(self) -> bytes:
        """The whole registry in the plain text format, every family rebuilt (tests, bench/scrape.py)."""
        return generate_latest(self.registry)
