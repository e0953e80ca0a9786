"""Event Grid triggers as Azure delivers them, over HTTP to `/runtime/webhooks/EventGrid`: the
subscription handshakes of both schemas, events that start an orchestration whose activity
publishes the result to a topic through the eventGrid output binding."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.harness import APPS, HostProcess
from tests.triggers.conftest import hub_url
from tests.waiting import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

APP = APPS / "triggers_v1"
TOPIC_KEY = "topic-key-1"


class Topic:
    """An Event Grid topic endpoint on loopback: keeps what is posted to it."""

    def __init__(self) -> None:
        self.received: list[tuple[dict[str, str], Any]] = []
        topic = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                topic.received.append((dict(self.headers.items()), json.loads(body)))
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/api/events"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def results(self) -> list[str]:
        return [event["data"]["result"] for _, events in self.received for event in events]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def topic() -> Iterator[Topic]:
    endpoint = Topic()
    yield endpoint
    endpoint.close()


@pytest.fixture
def host(tmp_path: Path, topic: Topic, hosts: list[HostProcess], sdk_session: None) -> HostProcess:
    env = {
        "TOPIC_ENDPOINT": topic.url,
        "TOPIC_KEY": TOPIC_KEY,
        # Not used here: the app's other functions need them to start.
        "RedisConnection": "redis://127.0.0.1:1/0",
        "RabbitMQConnection": "amqp://guest:guest@127.0.0.1:1/",
        **{n: "unused" for n in ("RABBIT_IN", "RABBIT_OUT", "REDIS_LIST", "REDIS_STREAM")},
        **{n: "unused" for n in ("REDIS_CHANNEL", "REDIS_OUT")},
    }
    started = HostProcess(APP, hub_url(tmp_path), env).start()
    hosts.append(started)
    return started


def webhook(host: HostProcess, function: str = "FromEventGrid") -> str:
    return f"{host.origin}/runtime/webhooks/EventGrid?functionName={function}"


def grid_event(text: str) -> dict[str, Any]:
    return {
        "id": "e1",
        "topic": "/subscriptions/x/resourceGroups/y",
        "subject": "subj",
        "eventType": "My.Type",
        "eventTime": "2026-01-01T00:00:00Z",
        "data": {"text": text},
        "dataVersion": "1.0",
    }


async def test_the_event_grid_subscription_handshake_answers_the_validation_code(
    host: HostProcess,
) -> None:
    validation = {
        **grid_event("x"),
        "eventType": "Microsoft.EventGrid.SubscriptionValidationEvent",
        "data": {"validationCode": "512d38b6-c7b8-40c8-89fe-f46f9e9622b6"},
    }
    async with httpx.AsyncClient() as http:
        response = await http.post(
            webhook(host),
            json=[validation],
            headers={"aeg-event-type": "SubscriptionValidation"},
        )
    assert response.status_code == 200
    assert response.json() == {"validationResponse": "512d38b6-c7b8-40c8-89fe-f46f9e9622b6"}
    assert "Executing 'Functions.FromEventGrid'" not in host.output


async def test_an_event_starts_an_orchestration_whose_result_goes_to_a_topic(
    host: HostProcess, topic: Topic
) -> None:
    async with httpx.AsyncClient() as http:
        response = await http.post(
            webhook(host),
            json=[grid_event("hello")],
            headers={"aeg-event-type": "Notification"},
        )
    assert response.status_code == 202
    await eventually(topic.results, lambda r: r == ["GRID MY.TYPE SUBJ HELLO"], timeout=60)
    headers, events = topic.received[0]
    assert headers.get("aeg-sas-key") == TOPIC_KEY
    assert events[0]["eventType"] == "Dfhost.Result"
    assert events[0]["subject"] == "dfhost/results"
    assert "Executing 'Functions.FromEventGrid' (Reason='EventGrid trigger fired at" in host.output


async def test_cloud_events_handshake_and_delivery(host: HostProcess, topic: Topic) -> None:
    event = {
        "specversion": "1.0",
        "id": "c1",
        "source": "/dfhost/tests",
        "type": "my.cloud",
        "time": "2026-01-01T00:00:00Z",
        "datacontenttype": "application/json",
        "data": {"text": "hi"},
    }
    async with httpx.AsyncClient() as http:
        handshake = await http.options(
            webhook(host), headers={"WebHook-Request-Origin": "eventgrid.azure.net"}
        )
        assert handshake.status_code == 200
        assert handshake.headers["webhook-allowed-origin"] == "eventgrid.azure.net"
        response = await http.post(
            webhook(host),
            content=json.dumps(event),
            headers={"content-type": "application/cloudevents+json; charset=utf-8"},
        )
        assert response.status_code == 202
        binary = await http.post(
            webhook(host),
            content=json.dumps({"text": "bin"}),
            headers={
                "content-type": "application/json",
                "ce-specversion": "1.0",
                "ce-id": "c2",
                "ce-source": "/dfhost/tests",
                "ce-type": "my.binary",
            },
        )
        assert binary.status_code == 202
    await eventually(
        topic.results,
        lambda r: sorted(r) == ["CLOUD MY.BINARY BIN", "CLOUD MY.CLOUD HI"],
        timeout=60,
    )


async def test_bad_requests_get_one_line_answers(host: HostProcess) -> None:
    async with httpx.AsyncClient() as http:
        missing = await http.post(f"{host.origin}/runtime/webhooks/EventGrid", json=[])
        unknown = await http.post(webhook(host, "Pipeline"), json=[grid_event("x")])
        broken = await http.post(webhook(host), content=b"{not json")
    assert missing.status_code == 400
    assert "functionName" in missing.text
    assert unknown.status_code == 404
    assert "Pipeline" in unknown.text
    assert broken.status_code == 400
    assert "not JSON" in broken.text
