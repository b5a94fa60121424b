"""Prometheus metrics and a health check for ``reconcile watch`` (``--metrics-port``).

``/metrics`` is the Prometheus text format (prometheus-client); ``/healthz`` answers 200 while the
watch works (its last cycle did not fail, or it stands by) and 503 with the reason otherwise.
Names and labels carry no user names and no secrets: counts only.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from reconcile.operations.watch import CycleReport


class WatchMetrics:
    """The watch's metrics, fed one :class:`CycleReport` at a time."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.cycles = Counter("reconcile_watch_cycles", "Cycles, by how they ended.", ["outcome"], registry=r)
        self.actions = Counter(
            "reconcile_watch_actions_applied", "Actions applied, by kind.", ["kind"], registry=r
        )
        self.failures = Counter(
            "reconcile_watch_failures", "Failed cycles plus failed actions of cycles that ran.", registry=r
        )
        self.duration = Histogram(
            "reconcile_watch_cycle_duration_seconds",
            "How long a cycle took.",
            buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 3600),
            registry=r,
        )
        self.last_success = Gauge(
            "reconcile_watch_last_success_timestamp_seconds",
            "When the last successful cycle ended (Unix time; 0: none yet).",
            registry=r,
        )
        self.awaiting = Gauge(
            "reconcile_watch_awaiting_agreement",
            "Traders whose Sim+ waits for the Market Data Agreement (last cycle that applied).",
            registry=r,
        )
        self.drift = Gauge(
            "reconcile_watch_drift",
            "Differences from the live organization found by the last refresh.",
            registry=r,
        )
        self.leader = Gauge("reconcile_watch_leader", "1 while this process leads, 0 on standby.", registry=r)
        self._lock = threading.Lock()
        self._last: CycleReport | None = None

    def observe(self, report: CycleReport) -> None:
        """Count one cycle."""
        with self._lock:
            self._last = report
        self.cycles.labels(report.outcome).inc()
        self.duration.observe(report.seconds)
        for kind, n in report.applied.items():
            self.actions.labels(kind).inc(n)
        failed = report.outcome in ("failed", "needs_person")
        self.failures.inc(max(report.failures, 1) if failed else report.failures)
        self.leader.set(0 if report.outcome == "standby" else 1)
        if report.succeeded:
            self.last_success.set(report.started.timestamp() + report.seconds)
        if report.outcome in ("applied", "in_sync", "failed"):
            self.awaiting.set(report.awaiting_agreement)
        if report.drift is not None:
            self.drift.set(report.drift)

    def health(self) -> tuple[bool, str]:
        """(healthy, why): unhealthy while the last cycle failed."""
        with self._lock:
            last = self._last
        if last is None:
            return True, "starting: no cycle has ended yet"
        if last.outcome in ("failed", "needs_person"):
            return False, f"cycle {last.cycle} {last.outcome}: {last.message or 'see the log'}"
        return True, f"cycle {last.cycle} {last.outcome}"

    def serve(self, host: str, port: int) -> ThreadingHTTPServer:
        """Serve ``/metrics`` and ``/healthz`` on ``host:port`` from a daemon thread (port 0: any)."""
        metrics = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._send(200, generate_latest(metrics.registry), CONTENT_TYPE_LATEST)
                elif path == "/healthz":
                    healthy, why = metrics.health()
                    self._send(200 if healthy else 503, (why + "\n").encode(), "text/plain; charset=utf-8")
                else:
                    self._send(404, b"not found: try /metrics or /healthz\n", "text/plain; charset=utf-8")

            def _send(self, status: int, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass  # scrapes every few seconds would drown the cycle log

        server = ThreadingHTTPServer((host, port), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
        return server
