"""Write the example model's reference data for ``mlmon baseline``.

    python train.py --out churn-train.csv
    mlmon baseline --data churn-train.csv --model churn --prediction prediction \
        --target churned --categorical contract -o churn.baseline.json

The rows are a fresh sample of the training distribution (a holdout, so the reference quality
stored in the baseline is honest) with the model's prediction and the true outcome.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

from model import SEED, train, training_data
from world import FEATURES


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="CSV file to write")
    parser.add_argument("--rows", type=int, default=20_000)
    args = parser.parse_args(argv)
    model = train()
    feats, _, labels = training_data(args.rows, SEED + 1)
    predictions = (model.predict_proba(feats) >= 0.5).astype(int)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow([*FEATURES, "prediction", "churned"])
        for f, p, y in zip(feats, predictions, labels, strict=True):
            writer.writerow([*(f[name] for name in FEATURES), int(p), int(y)])
    accuracy = float((predictions == labels).mean())
    print(f"wrote {args.out}: {len(feats)} rows, holdout accuracy {accuracy:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
