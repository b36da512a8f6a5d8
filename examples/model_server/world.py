"""The simulated world of the example: customers of a subscription service and whether they churn.

Standard library only, so the load generator (which has no numpy) draws the same customers and
the same outcomes as the training data. ``drift`` in [0, 1] moves the world away from the one
the model was trained on:

* covariate drift: younger customers, higher charges, more month-to-month contracts, a new
  ``weekly`` contract the model never saw, and some missing ``monthly_charges``;
* concept drift: price stops driving churn and one gender starts leaving regardless, so the
  model's accuracy falls and its recall differs between groups (a fairness gap).
"""

from __future__ import annotations

import math
import random
from typing import Any

FEATURES = ("age", "tenure_months", "monthly_charges", "contract")
NUMERIC = ("age", "tenure_months", "monthly_charges")
CONTRACTS = ("month-to-month", "one-year", "two-year")
GROUP_ATTRIBUTE = "gender"


def _clip(value: float, low: float, high: float) -> float:
    return min(max(value, low), high)


def sample_customer(rng: random.Random, drift: float = 0.0) -> tuple[dict[str, Any], dict[str, str]]:
    """One customer's features and group attributes."""
    d = _clip(drift, 0.0, 1.0)
    age = _clip(rng.gauss(45 - 12 * d, 12), 18, 90)
    tenure = _clip(rng.gammavariate(2.0, 12.0 * (1 - 0.4 * d)), 0, 72)
    charges: float | None = _clip(rng.gauss(70 * (1 + 0.3 * d), 25), 15, 150 * (1 + 0.3 * d))
    weights = (0.55 + 0.25 * d, 0.25 - 0.1 * d, 0.20 - 0.18 * d)
    contract = rng.choices(CONTRACTS, weights=weights)[0]
    if rng.random() < 0.03 * d:
        contract = "weekly"
    if rng.random() < 0.06 * d:
        charges = None
    features = {"age": round(age, 1), "tenure_months": round(tenure, 1),
                "monthly_charges": None if charges is None else round(charges, 2), "contract": contract}
    return features, {GROUP_ATTRIBUTE: rng.choice(("female", "male"))}


def churn_probability(features: dict[str, Any], groups: dict[str, str], drift: float = 0.0) -> float:
    """The true probability that this customer churns (what labels are drawn from)."""
    d = _clip(drift, 0.0, 1.0)
    charges = features.get("monthly_charges")
    charges = 70.0 if charges is None else float(charges)
    contract_effect = {"month-to-month": 0.9, "one-year": -0.4, "two-year": -1.3, "weekly": 1.5}
    # Concept drift: price stops driving churn the way it used to (competitors matched it) and
    # one group starts leaving regardless, so the model's learned relation goes stale.
    logit = (-0.6 - 0.03 * (features["age"] - 45) - 0.05 * (features["tenure_months"] - 24)
             + 0.03 * (1 - 1.8 * d) * (charges - 70) + contract_effect.get(features["contract"], 0.0))
    logit += -0.3 * d + (1.2 * d if groups.get(GROUP_ATTRIBUTE) == "female" else 0.0)
    return 1.0 / (1.0 + math.exp(-logit))


def sample_label(rng: random.Random, features: dict[str, Any], groups: dict[str, str], drift: float = 0.0) -> int:
    return int(rng.random() < churn_probability(features, groups, drift))
