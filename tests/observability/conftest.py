"""Fixtures for the observability tests: spans recorded in memory instead of exported."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from dfhost import telemetry

APP = Path(__file__).resolve().parent / "app"


class Recorder:
    """Turns tracing on with a fresh in-memory exporter per "process" (`new_host`)."""

    def __init__(self) -> None:
        self.exporters: list[InMemorySpanExporter] = []

    def new_host(self) -> InMemorySpanExporter:
        """Start recording as another process would: nothing remembered from before."""
        exporter = InMemorySpanExporter()
        telemetry.configure(SimpleSpanProcessor(exporter))
        self.exporters.append(exporter)
        return exporter

    def spans(self) -> list:  # type: ignore[type-arg]
        return [s for e in self.exporters for s in e.get_finished_spans()]


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    recorder = Recorder()
    recorder.new_host()
    try:
        yield recorder
    finally:
        telemetry.shutdown()
