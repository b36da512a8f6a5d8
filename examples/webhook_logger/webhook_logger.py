"""A webhook receiver that logs the alerts Alertmanager delivers: one line per alert, on stdout.

    python webhook_logger.py            # listens on $HOST:$PORT (127.0.0.1:5001)
    docker-compose logs -f webhook-logger

Accepts Alertmanager's webhook payload (version 4) on any path, so several receivers can point
at it (``/critical``, ``/warning``); the path is printed with each alert. ``GET /healthz``
answers 200. Standard library only.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MAX_BODY = 1 << 20


def format_alert(path: str, group: dict, alert: dict) -> str:
    labels, annotations = alert.get("labels", {}), alert.get("annotations", {})
    status = alert.get("status", group.get("status", "?")).upper()
    parts = [
        datetime.now(timezone.utc).isoformat(timespec="seconds"),
        path,
        status,
        labels.get("alertname", "?"),
        f"severity={labels.get('severity', '-')}",
        f"model={labels.get('model', '-')}",
        f"since={alert.get('startsAt', '-')}",
    ]
    text = annotations.get("summary") or annotations.get("description") or ""
    if text:
        parts.append(f"summary={text!r}")
    if annotations.get("runbook_url"):
        parts.append(f"runbook={annotations['runbook_url']}")
    return " ".join(parts)


class Handler(BaseHTTPRequestHandler):
    server_version = "mlmon-webhook-logger/1"

    def _reply(self, code: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path.rstrip("/") in ("/healthz", ""):
            self._reply(200, {"status": "ok"})
        else:
            self._reply(404, {"error": "POST alerts here; GET /healthz"})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length <= 0 or length > MAX_BODY:
            self._reply(413 if length > MAX_BODY else 400, {"error": "expected a JSON body up to 1 MiB"})
            return
        try:
            payload = json.loads(self.rfile.read(length))
            alerts = payload["alerts"]
        except (ValueError, KeyError, TypeError):
            self._reply(400, {"error": "not an Alertmanager webhook payload"})
            return
        for alert in alerts:
            print(format_alert(self.path, payload, alert), flush=True)
        self._reply(200, {"received": len(alerts)})

    def log_message(self, format: str, *args) -> None:
        pass


def main() -> int:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    # Loopback by default (it shares Alertmanager's network namespace in docker-compose.yml).
    host = os.environ.get("HOST", "127.0.0.1")
    port = int(os.environ.get("PORT", "5001"))
    server = ThreadingHTTPServer((host, port), Handler)
    print(f"webhook logger listening on {host}:{port}", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
