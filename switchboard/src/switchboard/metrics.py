"""Prometheus metrics, one registry per service, so that services sharing a process (the embedded
mode, the tests) never mix their counts."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.process_collector import ProcessCollector

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class ServiceMetrics:
    def __init__(self, service: str) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=self.registry)
        self.connected_clients = Gauge(
            "switchboard_connected_clients",
            "socket.io clients connected to this process",
            ["service"],
            registry=self.registry,
        ).labels(service=service)
        self._received = Counter(
            "switchboard_events_received",
            "socket.io events received from clients, by event name",
            ["service", "event"],
            registry=self.registry,
        )
        self._sent = Counter(
            "switchboard_events_sent",
            "socket.io emits made by this process, by event name (one per emit, "
            "whether to one client or a room)",
            ["service", "event"],
            registry=self.registry,
        )
        self._rejected = Counter(
            "switchboard_rejected_inputs",
            "client inputs refused, by event and error code",
            ["service", "event", "error"],
            registry=self.registry,
        )
        self.redis_errors = Counter(
            "switchboard_redis_errors",
            "Redis commands that failed (timeouts, lost connections, script errors)",
            ["service"],
            registry=self.registry,
        ).labels(service=service)
        self.unreplicated_writes = Counter(
            "switchboard_redis_unreplicated_writes",
            "acknowledged writes no Redis replica had confirmed when they were answered "
            "(REDIS_WAIT_REPLICAS): a failover then could lose them",
            ["service"],
            registry=self.registry,
        ).labels(service=service)
        self.slow_clients_cut_off = Counter(
            "switchboard_slow_clients_cut_off",
            "websocket clients cut off because more than SEND_BUFFER_LIMIT bytes waited "
            "unread for them",
            ["service"],
            registry=self.registry,
        ).labels(service=service)
        self._service = service
        # Each event's counter, found once: labels() costs more than the count itself, and
        # every message received and sent is counted.
        self._received_by: dict[str, Any] = {}
        self._sent_by: dict[str, Any] = {}

    def received(self, event: str) -> None:
        counter = self._received_by.get(event)
        if counter is None:
            counter = self._received_by[event] = self._received.labels(self._service, event)
        counter.inc()

    def sent(self, event: str) -> None:
        counter = self._sent_by.get(event)
        if counter is None:
            counter = self._sent_by[event] = self._sent.labels(self._service, event)
        counter.inc()

    def rejected(self, event: str, error: str) -> None:
        self._rejected.labels(self._service, event, error).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
