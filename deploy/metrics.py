"""Prometheus-style metrics of the HTTP service, rendered as text format 0.0.4 at ``/metrics``.

Hand-written (no client library): counters by route/method/status, a latency histogram per
route, in-flight and queued gauges, rejections by reason (queue_full, queue_timeout,
body_too_large, read_timeout), 5xx errors by route, and the images per generator batch.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Sequence

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class _Histogram:
    def __init__(self, buckets: Sequence[float]) -> None:
        self.buckets = tuple(buckets)
        self.counts = [0] * (len(self.buckets) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[next((i for i, b in enumerate(self.buckets) if value <= b), -1)] += 1
        self.total += value

    def lines(self, name: str, labels: str) -> list[str]:
        out, running = [], 0
        sep = "," if labels else ""
        for bound, count in zip((*self.buckets, "+Inf"), self.counts):
            running += count
            out.append(f'{name}_bucket{{{labels}{sep}le="{bound}"}} {running}')
        out.append(f"{name}_sum{{{labels}}} {self.total:.6f}")
        out.append(f"{name}_count{{{labels}}} {running}")
        return out


class Metrics:
    """Counters, gauges and histograms rendered as Prometheus text (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: dict[tuple[str, str, int], int] = defaultdict(int)
        self.latency: dict[str, _Histogram] = {}
        self.rejected: dict[str, int] = defaultdict(int)
        self.errors: dict[str, int] = defaultdict(int)
        self.batch_images = _Histogram(BATCH_BUCKETS)
        self.in_flight = 0
        self.queued = 0

    def request_done(self, route: str, method: str, status: int, seconds: float) -> None:
        with self._lock:
            self.requests[(route, method, status)] += 1
            self.latency.setdefault(route, _Histogram(LATENCY_BUCKETS)).observe(seconds)
            if status >= 500:
                self.errors[route] += 1

    def reject(self, reason: str) -> None:
        with self._lock:
            self.rejected[reason] += 1

    def batch(self, images: int) -> None:
        with self._lock:
            self.batch_images.observe(images)

    def add(self, name: str, delta: int) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + delta)

    def render(self) -> str:
        p = "ganforge_http"
        with self._lock:
            lines = [f"# TYPE {p}_requests_total counter"]
            for (route, method, status), n in sorted(self.requests.items()):
                lines.append(
                    f'{p}_requests_total{{route="{route}",method="{method}",status="{status}"}} {n}'
                )
            lines.append(f"# TYPE {p}_request_duration_seconds histogram")
            for route, hist in sorted(self.latency.items()):
                lines += hist.lines(f"{p}_request_duration_seconds", f'route="{route}"')
            lines.append(f"# TYPE {p}_errors_total counter")
            lines += [
                f'{p}_errors_total{{route="{r}"}} {n}' for r, n in sorted(self.errors.items())
            ]
            lines.append(f"# TYPE {p}_rejected_total counter")
            lines += [
                f'{p}_rejected_total{{reason="{r}"}} {n}' for r, n in sorted(self.rejected.items())
            ]
            lines.append(f"# TYPE {p}_requests_in_flight gauge")
            lines.append(f"{p}_requests_in_flight {self.in_flight}")
            lines.append(f"# TYPE {p}_requests_queued gauge")
            lines.append(f"{p}_requests_queued {self.queued}")
            lines.append("# TYPE ganforge_batch_images histogram")
            lines += self.batch_images.lines("ganforge_batch_images", "")
        return "\n".join(lines) + "\n"
