"""`GET /admin/metrics`: Prometheus text exposition of this host's counters and histograms
(`dfhost.metrics`) and of the task hub's gauges, read from the store at each scrape (every host
of a hub reports the same hub gauges: query one of them, or aggregate with `max`)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterator
from datetime import datetime

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from starlette.requests import Request
from starlette.responses import Response

from dfhost import metrics
from dfhost.history import utcnow
from dfhost.store import HubSummary, Store
from dfhost.web.common import log_has_it, logged_error

__all__ = ["PATH", "metrics_endpoint"]

PATH = "/admin/metrics"

log = logging.getLogger("dfhost")


class _HubGauges:
    """A collector for one scrape's `HubSummary`."""

    def __init__(self, summary: HubSummary, now: datetime) -> None:
        self.summary = summary
        self.now = now

    def collect(self) -> Iterator[Metric]:
        s = self.summary
        instances = GaugeMetricFamily(
            "dfhost_instances",
            "Instances in the task hub, by orchestrator (or entity) name and runtime status.",
            labels=["orchestrator", "status"],
        )
        for (name, status), count in sorted(s.instances.items()):
            instances.add_metric([name, status.value], count)
        yield instances
        yield _gauge(
            "dfhost_queue_messages",
            "Inbox messages deliverable now: episodes waiting to run.",
            s.ready_messages,
        )
        yield _gauge(
            "dfhost_queue_activities", "Activity executions waiting for a host.", s.ready_activities
        )
        if s.running_activities is not None:
            yield _gauge(
                "dfhost_running_activities",
                "Activity executions leased to a host.",
                s.running_activities,
            )
        age = 0.0 if s.oldest_ready is None else (self.now - s.oldest_ready).total_seconds()
        yield _gauge(
            "dfhost_oldest_pending_work_age_seconds",
            "How long the longest-waiting ready message or activity has waited (0: none).",
            max(0.0, age),
        )
        if s.next_timer is not None:
            yield _gauge(
                "dfhost_next_timer_timestamp_seconds",
                "When the next durable timer (or scheduled start) falls due, as a Unix time.",
                s.next_timer.timestamp(),
            )
        if s.live_hosts is not None:
            yield _gauge("dfhost_live_hosts", "Hosts working on the task hub.", s.live_hosts)


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


def metrics_endpoint(
    store: Store, clock: Callable[[], datetime] = utcnow
) -> Callable[[Request], Awaitable[Response]]:
    """The endpoint serving `store`'s hub with this process's metrics."""

    async def endpoint(request: Request) -> Response:
        now = clock()
        try:
            summary = await store.hub_summary(now)
        except Exception as exc:  # a StoreError, or a closed client's own error
            incident = logged_error(log, "dfhost: %s: the task hub did not answer: %s", PATH, exc)
            message = f"the task hub did not answer; {log_has_it(incident)}\n"
            return Response(message, 503, media_type="text/plain")
        hub = CollectorRegistry(auto_describe=False)
        hub.register(_HubGauges(summary, now))
        body = generate_latest(metrics.REGISTRY) + generate_latest(hub)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    return endpoint
