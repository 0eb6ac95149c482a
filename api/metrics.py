"""Prometheus metrics of the API, served on /metrics (AIOS_METRICS_PORT) with the processors' ones."""

from __future__ import annotations

import time

from prometheus_client import Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

REQUESTS = Counter("aios_api_requests_total", "HTTP requests answered, by route template and status.",
                   ["method", "route", "status"])
LATENCY = Histogram("aios_api_request_seconds", "Time to answer an HTTP request, by route template.",
                    ["method", "route"],
                    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
AUTH_FAILURES = Counter("aios_api_auth_failures_total", "Requests refused before routing, by status.", ["status"])
WS_CLIENTS = Gauge("aios_api_ws_clients", "WebSocket clients connected to /v1/stream.")
WS_DROPPED = Counter("aios_api_ws_dropped_total", "WebSocket clients closed for falling too far behind.")
WS_REFUSED = Counter("aios_api_ws_closed_total",
                     "WebSocket connections the API refused or closed for their credential: over the per-key "
                     "cap, key revoked, token expired.", ["reason"])


class Metrics:
    """Counts and times every HTTP request by its route template (never by raw path: ids would
    make a label per task)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def recording(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, recording)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            REQUESTS.labels(scope["method"], route, str(status)).inc()
            LATENCY.labels(scope["method"], route).observe(time.perf_counter() - start)
KAFKA_SAMPLES = Counter("aios_api_kafka_samples_total", "Readings of topics' offsets and groups' lag for the Kafka view.")
KAFKA_SAMPLE_ERRORS = Counter("aios_api_kafka_sample_errors_total",
                              "Readings of the Kafka view the broker did not answer.")
