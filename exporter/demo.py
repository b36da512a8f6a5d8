"""``mlmon demo``: a simulated churn model, its traffic and the sidecar, with no files or services.

The traffic goes through the real HTTP API (via ``MlmonClient``), so the demo exercises the
same path as production. After ``drift_after`` seconds some features drift and the true
churn behaviour changes (concept drift), so drift gauges and — once labels arrive — quality
visibly move.
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd

from exporter.baseline import build_baseline
from exporter.client import MlmonClient
from exporter.config import (
    Config,
    DriftConfig,
    FairnessConfig,
    LabelsConfig,
    ModelConfig,
    QualityThreshold,
    ServerConfig,
    SLOConfig,
    WindowConfig,
)
from exporter.profile import Baseline
from exporter.service import Service

MODEL = "churn"
CONTRACTS = ("month-to-month", "one-year", "two-year")
PAYMENTS = ("electronic_check", "mailed_check", "bank_transfer", "credit_card")
REGIONS = ("north", "south", "east", "west")
AGE_BANDS = ("18-30", "30-45", "45-60", "60+")


@dataclass(frozen=True)
class DriftPlan:
    """What changes once drift starts: shifted inputs and a changed relation to churn."""

    monthly_charges_shift: float = 18.0
    support_calls_factor: float = 2.0
    month_to_month_share: float = 0.78
    concept_shift: float = 1.2


def simulate_customers(n: int, rng: np.random.Generator, drifted: DriftPlan | None = None) -> pd.DataFrame:
    """Tabular customers; with ``drifted`` the input distribution shifts as the plan says."""
    d = drifted
    tenure = np.clip(rng.gamma(2.0, 12.0, n), 0, 72)
    monthly = np.clip(rng.normal(65 + (d.monthly_charges_shift if d else 0), 20, n), 18, 140)
    m2m = d.month_to_month_share if d else 0.55
    contract = rng.choice(CONTRACTS, n, p=[m2m, (1 - m2m) * 0.55, (1 - m2m) * 0.45])
    return pd.DataFrame({
        "tenure_months": np.round(tenure, 1),
        "monthly_charges": np.round(monthly, 2),
        "total_charges": np.round(tenure * monthly * rng.normal(1.0, 0.05, n), 2),
        "support_calls": rng.poisson(1.5 * (d.support_calls_factor if d else 1.0), n),
        "data_usage_gb": np.round(rng.lognormal(2.0, 0.8, n), 2),
        "age": np.clip(np.round(rng.normal(45, 14, n)), 18, 90),
        "purchase_frequency": np.round(rng.gamma(3.0, 1.5, n), 2),
        "contract": contract,
        "payment_method": rng.choice(PAYMENTS, n, p=[0.35, 0.2, 0.25, 0.2]),
        "region": rng.choice(REGIONS, n),
    })


def churn_logit(df: pd.DataFrame) -> np.ndarray:
    """The model: a fixed logistic score (what was learned on the training data)."""
    return (-1.2 + 1.1 * (df["contract"] == "month-to-month") - 0.04 * df["tenure_months"]
            + 0.02 * (df["monthly_charges"] - 65) + 0.35 * df["support_calls"]
            - 0.12 * df["purchase_frequency"] + 0.3 * (df["payment_method"] == "electronic_check")).to_numpy()


def true_churn_probability(df: pd.DataFrame, drifted: DriftPlan | None) -> np.ndarray:
    """The world: equal to the model before drift; afterwards price sensitivity changes."""
    logit = churn_logit(df)
    if drifted:
        logit = logit + drifted.concept_shift * np.tanh((df["monthly_charges"].to_numpy() - 75) / 15)
    return 1 / (1 + np.exp(-logit))


def predict(df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    p = 1 / (1 + np.exp(-churn_logit(df)))
    return p, np.where(p >= 0.5, "churn", "stay")


def demo_baseline(seed: int = 7, n: int = 20_000) -> Baseline:
    rng = np.random.default_rng(seed)
    train = simulate_customers(n, rng)
    proba, pred = predict(train)
    train["prediction"] = pred
    train["confidence"] = np.maximum(proba, 1 - proba)
    train["churned"] = np.where(rng.random(n) < true_churn_probability(train, None), "churn", "stay")
    return build_baseline(train, MODEL, prediction="prediction", target="churned", confidence="confidence")


def demo_config(port: int, host: str = "127.0.0.1") -> Config:
    window = WindowConfig(window_seconds=300, bucket_seconds=10, evaluation_interval_seconds=5, min_samples=200)
    model = ModelConfig(
        name=MODEL, task="classification", positive_class="churn", window=window,
        # A 5-minute demo window: test the last minute beside it, so the recent window shows too.
        drift=DriftConfig(recent_window_seconds=60),
        slos=(SLOConfig("latency", "latency", 0.99, threshold_seconds=0.1),
              SLOConfig("availability", "availability", 0.995),
              SLOConfig("correctness", "correctness", 0.75)),
        quality_thresholds={"accuracy": QualityThreshold(baseline_offset=-0.05),
                            "f1": QualityThreshold(baseline_offset=-0.1)},
        labels=LabelsConfig(ttl_seconds=3600, max_pending=200_000, stale_after_seconds=120),
        fairness=FairnessConfig(attributes=("age_band", "region"), min_samples=50, threshold=0.15),
    )
    return Config(server=ServerConfig(listen=f"{host}:{port}"), defaults=window, models=(model,))


class Traffic:
    """Sends simulated predictions at ``rate`` records/s and their true labels later.

    Label delay is exponential with mean ``label_delay`` seconds; 10 % of labels never come.
    """

    def __init__(self, client: MlmonClient, rate: float, drift_after: float, seed: int = 11,
                 plan: DriftPlan | None = None, label_delay: float = 10.0) -> None:
        self.client = client
        self.label_delay = label_delay
        self.latency_scale = 1.0
        self._labels: list[tuple[float, str, str]] = []
        self.rate = rate
        self.drift_after = drift_after
        self.plan = plan or DriftPlan()
        self.rng = np.random.default_rng(seed)
        self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="mlmon-demo-traffic", daemon=True)
        self.started = time.monotonic()

    @property
    def drifting(self) -> bool:
        return time.monotonic() - self.started >= self.drift_after

    def start(self) -> None:
        self.started = time.monotonic()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        tick = 0.25
        while not self._stop.wait(tick):
            n = self.rng.poisson(self.rate * tick)
            if n:
                self.send(n)
            now = time.monotonic()
            while self._labels and self._labels[0][0] <= now:
                _, id_, label = heapq.heappop(self._labels)
                self.client.label(id_, label)

    def send(self, n: int) -> None:
        plan = self.plan if self.drifting else None
        df = simulate_customers(n, self.rng, plan)
        proba, _ = predict(df)
        truth = np.where(self.rng.random(n) < true_churn_probability(df, plan), "churn", "stay")
        due = time.monotonic() + self.rng.exponential(self.label_delay, n)
        arrives = self.rng.random(n) >= 0.1
        latency = self.rng.lognormal(np.log(0.02), 0.6, n) * self.latency_scale
        errors = self.rng.random(n) < 0.002
        ages = df["age"].to_numpy()
        bands = np.select([ages < 30, ages < 45, ages < 60], AGE_BANDS[:3], AGE_BANDS[3])
        for i, row in enumerate(df.to_dict("records")):
            self.client.record(
                {str(k): v for k, v in row.items()}, {"churn": float(proba[i]), "stay": float(1 - proba[i])},
                latency_seconds=float(latency[i]), id=f"demo-{self.sent + i}", error=bool(errors[i]),
                groups={"age_band": str(bands[i]), "region": row["region"]})
            if arrives[i]:
                heapq.heappush(self._labels, (float(due[i]), f"demo-{self.sent + i}", str(truth[i])))
        self.sent += n


def run_demo(port: int = 8000, rate: float = 100.0, drift_after: float = 120.0, duration: float | None = None,
             host: str = "127.0.0.1") -> None:
    from exporter.server import build_server, run_server, stop_server

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    service = Service(demo_config(port, host), {MODEL: demo_baseline()})
    server = build_server(service)
    service.start()
    base = f"http://{host}:{server.effective_port}"
    thread = threading.Thread(target=run_server, args=(server,), name="mlmon-http", daemon=True)
    thread.start()
    client = MlmonClient(base, MODEL, "v1", flush_interval=0.5)
    traffic = Traffic(client, rate, drift_after)
    traffic.start()
    print(f"""
mlmon demo: a simulated churn model sends ~{rate:g} predictions/s to the sidecar at {base}
  metrics:        curl {base}/metrics
  model status:   curl {base}/v1/models
  drift gauges:   curl -s {base}/metrics | grep mlmon_feature_drift_score
Labels follow ~10 s after each prediction. Drift starts in {drift_after:g} s: monthly_charges,
support_calls and contract shift, and churn behaviour changes, so accuracy drops. Ctrl-C to stop.
""", flush=True)
    try:
        if duration is None:
            while True:
                time.sleep(3600)
        else:
            time.sleep(duration)
    except KeyboardInterrupt:
        pass
    finally:
        traffic.stop()
        client.close()
        service.stop()
        stop_server(server)
