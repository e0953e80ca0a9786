"""The gRPC port's access rules: keys as metadata when keys are enforced; size limits with
clear statuses."""

from __future__ import annotations

import json
from pathlib import Path

import grpc
import pytest
from durabletask import client
from durabletask.internal import orchestrator_service_pb2 as pb
from durabletask.internal import orchestrator_service_pb2_grpc as pb_grpc

from tests.grpc.conftest import ServeProcess
from tests.grpc.test_sdk import sdk_worker, waits

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_keys_are_required_as_metadata_when_enforced(tmp_path: Path) -> None:
    hub = tmp_path / "hub"
    host = ServeProcess(f"sqlite:///{hub / 'hub.sqlite3'}", tmp_path, extra=("--require-keys",))
    host.start()
    try:
        keys = json.loads((hub / "keys.json").read_text())
        system_key = keys["systemKeys"]["durabletask_extension"]

        anonymous = client.TaskHubGrpcClient(host_address=host.address)
        with pytest.raises(grpc.RpcError) as refused:
            anonymous.schedule_new_orchestration(waits)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "x-functions-key" in (refused.value.details() or "")
        with grpc.insecure_channel(host.address) as channel:
            stub = pb_grpc.TaskHubSidecarServiceStub(channel)  # type: ignore[no-untyped-call]
            with pytest.raises(grpc.RpcError) as no_stream:
                next(iter(stub.GetWorkItems(pb.GetWorkItemsRequest(), timeout=30)))
            assert no_stream.value.code() == grpc.StatusCode.UNAUTHENTICATED
        wrong = client.TaskHubGrpcClient(
            host_address=host.address, metadata=[("x-functions-key", "not-the-key")]
        )
        with pytest.raises(grpc.RpcError) as mistaken:
            wrong.get_orchestration_state("any")
        assert mistaken.value.code() == grpc.StatusCode.UNAUTHENTICATED

        key = [("x-functions-key", system_key)]
        keyed = client.TaskHubGrpcClient(host_address=host.address, metadata=key)
        with sdk_worker(host.address, key) as w:
            w.start()  # type: ignore[no-untyped-call]
            instance_id = keyed.schedule_new_orchestration(waits)
            keyed.wait_for_orchestration_start(instance_id, timeout=30)
            keyed.raise_orchestration_event(instance_id, "go", data="in")
            state = keyed.wait_for_orchestration_completion(instance_id, timeout=30)
        assert state is not None and state.serialized_output == '"in"'
    finally:
        host.stop()


def test_sizes_over_the_limits_are_refused_clearly(served: ServeProcess) -> None:
    c = client.TaskHubGrpcClient(host_address=served.address)
    instance_id = c.schedule_new_orchestration(waits)
    # Over the payload limit (4 MiB by default) but within a gRPC message: the task hub's
    # refusal, naming the limit.
    with pytest.raises(grpc.RpcError) as too_large:
        c.raise_orchestration_event(instance_id, "go", data="x" * (5 * 1024 * 1024))
    assert too_large.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "event data" in (too_large.value.details() or "")
    # Over the gRPC message limit (16 MiB): gRPC's own refusal.
    with pytest.raises(grpc.RpcError) as too_long:
        c.raise_orchestration_event(instance_id, "go", data="x" * (17 * 1024 * 1024))
    assert too_long.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def _self_signed(folder: Path) -> tuple[Path, Path, bytes]:
    """A certificate for 127.0.0.1 and its key, as PEM files."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "dfhost test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(cert_pem)
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file, cert_pem


def test_with_certificate_files_the_port_speaks_tls_only(tmp_path: Path) -> None:
    cert_file, key_file, cert_pem = _self_signed(tmp_path)
    host = ServeProcess(
        f"sqlite:///{tmp_path / 'hub' / 'hub.sqlite3'}",
        tmp_path,
        extra=("--grpc-cert", str(cert_file), "--grpc-key", str(key_file)),
    )
    host.start()
    try:
        assert any("Durable Task gRPC on grpcs://" in line for line in host.lines)
        credentials = grpc.ssl_channel_credentials(root_certificates=cert_pem)
        with grpc.secure_channel(host.address, credentials) as channel:
            c = client.TaskHubGrpcClient(channel=channel)
            instance_id = c.schedule_new_orchestration(waits)
            state = c.get_orchestration_state(instance_id)
            assert state is not None
        with grpc.insecure_channel(host.address) as plain:
            stub = pb_grpc.TaskHubSidecarServiceStub(plain)  # type: ignore[no-untyped-call]
            with pytest.raises(grpc.RpcError) as refused:
                stub.GetInstance(pb.GetInstanceRequest(instanceId=instance_id), timeout=10)
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        host.stop()
