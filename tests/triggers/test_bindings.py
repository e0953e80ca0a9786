"""Bindings without servers: trigger values decoded into the SDK's own types, output values turned
into what is sent, binding expressions and blob path patterns, the settings and connection
strings the triggers read, and which functions load."""

from __future__ import annotations

import base64
import json
from datetime import datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any

import azure.functions as func
import pytest

from dfhost.app.bindings import (
    BindingValueError,
    BlobPathPattern,
    TriggerData,
    decode_input,
    output_items,
    resolve_expression,
)
from dfhost.app.functions import Binding, Function
from dfhost.app.loader import load_app
from dfhost.config import QueueSettings, RabbitMQSettings, TriggerSettings
from dfhost.runtime.triggers.bindings_io import encode_queue_message
from dfhost.runtime.triggers.connections import Connections, redis_url


def binding(type_: str, name: str = "arg", direction: str = "in", **settings: Any) -> Binding:
    return Binding(type_, name, direction, MappingProxyType(settings))


def function_with(trigger: Binding, handler: Any) -> Function:
    return Function("f", "queue", trigger, (trigger,), handler, __file__)


# --- decoding -------------------------------------------------------------------------------


def test_a_queue_message_becomes_a_func_queue_message_with_its_metadata() -> None:
    def handler(msg: func.QueueMessage) -> None: ...

    trigger = binding("queueTrigger", "msg")
    metadata = {
        "Id": "m1",
        "DequeueCount": 3,
        "InsertionTime": "2026-01-02T03:04:05+00:00",
        "PopReceipt": "r1",
    }
    value = decode_input(
        function_with(trigger, handler), trigger, TriggerData("hi", "string", metadata)
    )
    assert isinstance(value, func.QueueMessage)
    assert value.get_body() == b"hi"
    assert (value.id, value.dequeue_count, value.pop_receipt) == ("m1", 3, "r1")
    assert isinstance(value.insertion_time, datetime)


def test_str_and_bytes_annotations_and_data_type_get_the_raw_value() -> None:
    def as_text(msg: str) -> None: ...

    def as_bytes(msg: bytes) -> None: ...

    def untyped(msg):  # type: ignore[no-untyped-def]
        ...

    trigger = binding("queueTrigger", "msg")
    data = TriggerData(b"caf\xc3\xa9", "bytes", {})
    assert decode_input(function_with(trigger, as_text), trigger, data) == "café"
    assert decode_input(function_with(trigger, as_bytes), trigger, data) == b"caf\xc3\xa9"
    binary = binding("rabbitMQTrigger", "msg", dataType="binary")
    text = TriggerData("x", "string", {})
    assert decode_input(function_with(binary, untyped), binary, text) == b"x"
    # No converter (RabbitMQ, Redis): the worker's generic binding keeps text as text.
    rabbit = binding("rabbitMQTrigger", "msg")
    assert decode_input(function_with(rabbit, untyped), rabbit, text) == "x"


def test_a_blob_becomes_an_input_stream_with_name_length_and_uri() -> None:
    def handler(blob: func.InputStream) -> None: ...

    trigger = binding("blobTrigger", "blob")
    metadata = {
        "BlobTrigger": "in/a.txt",
        "Uri": "http://x/in/a.txt",
        "Properties": {"ContentLength": 3},
        "Metadata": {"k": "v"},
    }
    value = decode_input(
        function_with(trigger, handler), trigger, TriggerData(b"abc", "bytes", metadata)
    )
    assert isinstance(value, func.InputStream)
    assert (value.name, value.length, value.uri, value.read()) == (
        "in/a.txt",
        3,
        "http://x/in/a.txt",
        b"abc",
    )
    assert value.metadata == {"k": "v"}  # type: ignore[attr-defined]


def test_events_of_both_schemas_become_the_sdk_types() -> None:
    def handler(event: func.EventGridEvent) -> None: ...

    trigger = binding("eventGridTrigger", "event")
    fn = function_with(trigger, handler)
    grid = {"id": "1", "eventType": "T", "subject": "s", "data": {"a": 1}, "dataVersion": "1"}
    value = decode_input(fn, trigger, TriggerData(json.dumps(grid), "json", {}))
    assert isinstance(value, func.EventGridEvent)
    assert (value.event_type, value.subject, value.get_json()) == ("T", "s", {"a": 1})
    cloud = {"specversion": "1.0", "id": "2", "source": "/s", "type": "C", "data": "d"}
    value = decode_input(fn, trigger, TriggerData(json.dumps(cloud), "json", {}))
    assert isinstance(value, func.CloudEvent)
    assert (value.type, value.source, value.get_json()) == ("C", "/s", "d")


# --- outputs --------------------------------------------------------------------------------


def test_output_values_become_what_is_sent() -> None:
    queue = binding("queue", "out", "out")
    message = func.QueueMessage(body=b"from a message")
    assert output_items(queue, None) == []
    assert output_items(queue, "one") == ["one"]
    assert output_items(queue, ["a", b"b", message, {"k": 1}]) == [
        "a",
        b"b",
        b"from a message",
        '{"k": 1}',
    ]
    assert output_items(binding("blob", "out", "out"), "text") == [b"text"]
    redis = binding("redis", "out", "out")
    assert output_items(redis, "key value") == [["key", "value"]]
    assert output_items(redis, ["key", "two words"]) == [["key", "two words"]]
    event = func.EventGridOutputEvent(
        id="e", data={"x": 1}, subject="s", event_type="T", event_time=None, data_version="1.0"
    )
    [sent] = output_items(binding("eventGrid", "out", "out"), event)
    assert (sent["id"], sent["eventType"], sent["data"], sent["dataVersion"]) == (
        "e",
        "T",
        {"x": 1},
        "1.0",
    )
    with pytest.raises(BindingValueError, match="output binding 'out' \\(blob\\)"):
        output_items(binding("blob", "out", "out"), 42)


def test_queue_messages_are_base64_unless_message_encoding_is_none() -> None:
    assert base64.b64decode(encode_queue_message("héllo", "base64")).decode() == "héllo"
    assert encode_queue_message(b"raw", "none") == "raw"


# --- expressions and paths ------------------------------------------------------------------


def test_binding_expressions_fill_from_binding_data_and_app_settings() -> None:
    data = {"name": "report", "QueueTrigger": '{"order": {"id": 7}}'}
    env = {"CONTAINER": "out"}
    assert resolve_expression("%CONTAINER%/{Name}.csv", data, env) == "out/report.csv"
    assert resolve_expression("{queueTrigger.order.id}", data, env) == "7"
    assert len(resolve_expression("{rand-guid}", {}, env)) == 36
    with pytest.raises(BindingValueError, match="no value for \\{missing\\}"):
        resolve_expression("x/{missing}", data, env)
    with pytest.raises(BindingValueError, match="'NOPE'"):
        resolve_expression("%NOPE%/x", data, env)


def test_blob_path_patterns() -> None:
    pattern = BlobPathPattern.parse("images/{name}-original.{ext}")
    assert (pattern.container, pattern.prefix) == ("images", "")
    assert pattern.match("cat-original.png") == {"name": "cat", "ext": "png"}
    assert pattern.match("cat.png") is None
    assert BlobPathPattern.parse("in/sub/{name}").prefix == "sub/"
    assert BlobPathPattern.parse("in").match("any/thing") == {}
    with pytest.raises(BindingValueError, match="container name"):
        BlobPathPattern.parse("{c}/x")


# --- settings and connections ---------------------------------------------------------------


def test_host_json_sections_of_the_extensions() -> None:
    problems: list[str] = []
    host = {
        "extensions": {
            "queues": {"batchSize": 8, "maxPollingInterval": "00:00:02", "messageEncoding": "none"},
            "rabbitMQ": {"prefetchCount": 5, "queueName": "q"},
        }
    }
    settings = TriggerSettings.from_host_json(host, problems)
    assert problems == []
    assert settings.queues == QueueSettings(
        batch_size=8, max_polling_interval=2.0, message_encoding="none"
    )
    assert settings.queues.threshold == 4
    assert (settings.rabbitmq.prefetch_count, settings.rabbitmq.queue_name) == (5, "q")
    bad = {
        "extensions": {
            "queues": {"batchSize": 64},
            "blobs": {"dfhost": {"receiptLease": "00:00:05"}},
        }
    }
    settings = TriggerSettings.from_host_json(bad, problems)
    assert problems == [
        "host.json extensions.queues.batchSize 64 must be 1 to 32",
        "host.json extensions.blobs.dfhost.receiptLease '00:00:05' must be at least 15 s",
    ]
    assert settings.queues.batch_size == 16  # the defaults stand


def test_connection_strings(monkeypatch: pytest.MonkeyPatch) -> None:
    assert redis_url("cache.example:6380,password=p@ss,ssl=True,abortConnect=False") == (
        "rediss://:p%40ss@cache.example:6380/0"
    )
    assert redis_url("redis://127.0.0.1:6379/2") == "redis://127.0.0.1:6379/2"
    monkeypatch.setenv("AzureWebJobsRabbit", "amqp://u:p@h:5672/")
    connections = Connections(RabbitMQSettings(host_name="broker"))
    assert connections.amqp_url({"connectionStringSetting": "Rabbit"}) == "amqp://u:p@h:5672/"
    monkeypatch.setenv("RABBIT_USER", "me")
    assert connections.amqp_url({"userNameSetting": "RABBIT_USER", "port": 5673}) == (
        "amqp://me:guest@broker:5673/"
    )


# --- loading --------------------------------------------------------------------------------


def test_a_function_with_a_binding_dfhost_does_not_provide_is_listed_not_run(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "Reader"
    folder.mkdir()
    (folder / "function.json").write_text(
        json.dumps(
            {
                "bindings": [
                    {"type": "queueTrigger", "name": "msg", "direction": "in", "queueName": "q"},
                    {"type": "cosmosDB", "name": "doc", "direction": "in"},
                ]
            }
        )
    )
    (folder / "__init__.py").write_text("raise AssertionError('never imported')\n")
    runs = tmp_path / "Runs"
    runs.mkdir()
    (runs / "function.json").write_text(
        json.dumps(
            {
                "bindings": [
                    {"type": "queueTrigger", "name": "msg", "direction": "in", "queueName": "q"},
                    {"type": "blob", "name": "out", "direction": "out", "path": "c/{id}"},
                ]
            }
        )
    )
    (runs / "__init__.py").write_text("def main(msg, out):\n    pass\n")
    app = load_app(tmp_path)
    assert app.functions["Reader"].kind == "other"
    assert app.functions["Runs"].kind == "queue"
    [error] = app.errors
    assert error.message.startswith(
        "function 'Reader': binding 'doc' of type cosmosDB (in) is not supported; dfhost "
        "provides durableClient (in), http (out), queue (out), blob (in/out)"
    )
