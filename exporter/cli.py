"""``mlmon`` command line: serve · baseline · demo · check-config."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from exporter import __version__


def _names(value: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in value.split(",") if v.strip())


def _cmd_serve(args: argparse.Namespace) -> int:
    from exporter.config import ConfigError, load_config
    from exporter.server import serve
    from exporter.service import Service
    from exporter.webconfig import load_web_config

    logging.basicConfig(level=args.log_level, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        config = load_config(args.config)
        if config.state.dir is not None:
            from exporter.state import pin_hash_seed

            pin_hash_seed(config.state.dir)  # may re-execute this process (see its docstring)
        if args.listen:
            from dataclasses import replace

            config = replace(config, server=replace(config.server, listen=args.listen))
        service = Service(config)
        if config.server.web_config_file:
            load_web_config(config.server.web_config_file)
    except (ConfigError, ValueError) as exc:
        print(f"mlmon: cannot start:\n{exc}", file=sys.stderr)
        return 2
    serve(service)
    return 0


def _cmd_proxy(args: argparse.Namespace) -> int:
    import threading

    from exporter.config import ConfigError, load_config
    from exporter.proxy import build_proxy
    from exporter.server import build_server, run_server, stop_server
    from exporter.service import Service

    logging.basicConfig(level=args.log_level, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        service = Service(load_config(args.config))
        proxy = build_proxy(service, args.upstream, args.listen, args.upstream_timeout)
    except (ConfigError, ValueError, OSError) as exc:
        print(f"mlmon: cannot start:\n{exc}", file=sys.stderr)
        return 2
    sidecar = build_server(service)  # /metrics, /v1/labels … on server.listen, as with `mlmon serve`
    service.start()
    threading.Thread(target=run_server, args=(sidecar,), name="mlmon-sidecar", daemon=True).start()
    logging.getLogger("mlmon").info("mlmon proxy on %s → %s; metrics on %s", args.listen, args.upstream,
                                    service.config.server.listen)
    try:
        proxy.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        proxy.shutdown()
        proxy.monitor.stop()
        service.stop()
        stop_server(sidecar)
    return 0


def _cmd_check_config(args: argparse.Namespace) -> int:
    from exporter.config import ConfigError, load_config
    from exporter.service import Service
    from exporter.webconfig import load_web_config

    try:
        config = load_config(args.config)
        Service(config)  # loads every baseline and checks it fits the model's config
        if config.server.web_config_file:
            load_web_config(config.server.web_config_file)
    except (ConfigError, ValueError) as exc:
        print(f"{args.config}: invalid\n{exc}", file=sys.stderr)
        return 1
    for m in config.models:
        print(f"model {m.name}: task={m.task} baseline={m.baseline} slos={[s.name for s in m.slos]}")
    print(f"{args.config}: OK ({len(config.models)} model(s), listening on {config.server.listen})")
    return 0


def _cmd_baseline(args: argparse.Namespace) -> int:
    from exporter.baseline import BaselineError, build_baseline, read_table

    try:
        df = read_table(args.data)
        baseline = build_baseline(
            df, args.model, prediction=args.prediction, target=args.target, confidence=args.confidence,
            categorical=_names(args.categorical),
            numeric=_names(args.numeric), exclude=_names(args.exclude), task=args.task,
            fine_bins=args.fine_bins, coarse_bins=args.coarse_bins, top_k=args.top_k)
        baseline.save(args.output)
    except BaselineError as exc:
        print(f"mlmon baseline: {exc}", file=sys.stderr)
        return 1
    kinds = [p.kind for p in baseline.features.values()]
    print(f"{args.output}: {len(kinds)} features ({kinds.count('numeric')} numeric, "
          f"{kinds.count('categorical')} categorical) from {baseline.n_rows} rows; task={baseline.task}"
          + (f"; reference quality {baseline.reference_quality}" if baseline.reference_quality else ""))
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from exporter.demo import run_demo

    run_demo(port=args.port, rate=args.rate, drift_after=args.drift_after, duration=args.duration, host=args.host)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mlmon", description="Prometheus sidecar for ML model monitoring.")
    parser.add_argument("--version", action="version", version=f"mlmon {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="run the sidecar")
    p.add_argument("-c", "--config", required=True, help="mlmon.yaml")
    p.add_argument("--listen", help="override server.listen (HOST:PORT)")
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    p.set_defaults(func=_cmd_serve)

    p = sub.add_parser("proxy", help="reverse proxy in front of a model server that feeds the monitor")
    p.add_argument("--upstream", required=True, help="model server URL, e.g. http://127.0.0.1:8080")
    p.add_argument("--listen", default="127.0.0.1:8081", help="HOST:PORT the proxy listens on")
    p.add_argument("-c", "--config", required=True, help="mlmon.yaml (metrics are served on its server.listen)")
    p.add_argument("--upstream-timeout", type=float, default=300.0,
                   help="seconds to wait for the upstream before answering 504")
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    p.set_defaults(func=_cmd_proxy)

    p = sub.add_parser("check-config", help="validate a config file and its baselines")
    p.add_argument("config")
    p.set_defaults(func=_cmd_check_config)

    p = sub.add_parser("baseline", help="profile training data into a baseline file")
    p.add_argument("--data", required=True, help="training data (.csv or .parquet)")
    p.add_argument("--model", required=True)
    p.add_argument("--prediction", help="column holding the model's prediction")
    p.add_argument("--target", help="column holding the true label (stores reference quality)")
    p.add_argument("--confidence", help="column with the probability of the predicted class (calibrates the "
                   "label-free accuracy estimate; needs --prediction and --target)")
    p.add_argument("--categorical", default="", help="comma-separated columns to force categorical")
    p.add_argument("--numeric", default="", help="comma-separated columns to force numeric")
    p.add_argument("--exclude", default="", help="comma-separated columns to leave out (ids, timestamps)")
    p.add_argument("--task", choices=["classification", "regression"], help="default: inferred")
    p.add_argument("--fine-bins", type=int, default=100)
    p.add_argument("--coarse-bins", type=int, default=10)
    p.add_argument("--top-k", type=int, default=50, help="categories kept per categorical feature")
    p.add_argument("-o", "--output", required=True)
    p.set_defaults(func=_cmd_baseline)

    p = sub.add_parser("demo", help="run the sidecar with a simulated model and drifting traffic")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--rate", type=float, default=100.0, help="records per second")
    p.add_argument("--drift-after", type=float, default=120.0, help="seconds before drift starts")
    p.add_argument("--duration", type=float, help="stop after this many seconds (default: run until Ctrl-C)")
    p.set_defaults(func=_cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
