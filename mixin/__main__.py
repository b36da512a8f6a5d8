"""``python -m mixin``: write (or ``--check``) the generated rules, rule tests and dashboards."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mixin import config
from mixin.dashboards import build_dashboards
from mixin.rules import build_fixtures, build_rules

ROOT = Path(__file__).resolve().parents[1]


def build_all(cfg: config.MixinConfig) -> dict[str, str]:
    """Path relative to the repository root → file text, for every generated file."""
    files = {f"alerting/rules/{k}": v for k, v in build_rules(cfg).items()}
    files.update({f"alerting/tests/{k}": v for k, v in build_fixtures(cfg).items()})
    files.update({f"grafana/dashboards/{k}": v for k, v in build_dashboards(cfg).items()})
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mixin", description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=config.DEFAULT_PATH, help="mixin config (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=ROOT, help="root to write alerting/ and grafana/ under "
                        "(default: this repository)")
    parser.add_argument("--check", action="store_true", help="exit 1 if a file under --out differs from the generator")
    args = parser.parse_args(argv)
    try:
        cfg = config.load(args.config)
    except (OSError, ValueError) as exc:
        print(f"{args.config}: {exc}", file=sys.stderr)
        return 2
    files = build_all(cfg)
    stale = []
    for rel, text in files.items():
        path = args.out / rel
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current == text:
            continue
        if args.check:
            stale.append(rel)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path}")
    if args.check:
        for directory, pattern in (("alerting/rules", "*.yml"), ("alerting/tests", "*.yml"),
                                   ("grafana/dashboards", "*.json")):
            stale += sorted(str(p.relative_to(args.out)) for p in (args.out / directory).glob(pattern)
                            if str(p.relative_to(args.out)) not in files)
    if stale:
        print("out of date (run python -m mixin): " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
