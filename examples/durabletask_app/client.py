"""A Durable Task SDK client for dfhost: start an order, approve it, wait for it.

    python client.py run order-1          # start, wait for the approval step, approve, wait
    python client.py start order-1        # or one step at a time
    python client.py approve order-1
    python client.py wait order-1
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from durabletask import client


def start(c: client.TaskHubGrpcClient, order_id: str, approval_seconds: int) -> None:
    order = {"id": order_id, "items": ["apple", "pear", "plum"], "approval_seconds": approval_seconds}
    c.schedule_new_orchestration("process_order", input=order, instance_id=order_id)
    print(f"started {order_id}")


def awaiting_approval(c: client.TaskHubGrpcClient, order_id: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = c.get_orchestration_state(order_id)
        if state is not None and state.serialized_custom_status == '"awaiting approval"':
            return True
        time.sleep(0.2)
    return False


def approve(c: client.TaskHubGrpcClient, order_id: str) -> None:
    c.raise_orchestration_event(order_id, "approval", data="approved")
    print(f"approved {order_id}")


def wait(c: client.TaskHubGrpcClient, order_id: str, timeout: float) -> int:
    state = c.wait_for_orchestration_completion(order_id, timeout=timeout)
    if state is None:
        print(f"{order_id}: no such order", file=sys.stderr)
        return 1
    print(f"{order_id}: {state.runtime_status.name}")
    if state.serialized_output:
        print(json.dumps(json.loads(state.serialized_output), indent=2))
    if state.failure_details is not None:
        print(state.failure_details.message, file=sys.stderr)
    return 0 if state.runtime_status == client.OrchestrationStatus.COMPLETED else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", choices=["run", "start", "approve", "wait", "awaiting"])
    parser.add_argument("order_id")
    parser.add_argument("--address", default="localhost:4001", help="dfhost's gRPC host:port")
    parser.add_argument("--approval-seconds", type=int, default=300)
    parser.add_argument("--timeout", type=float, default=120)
    args = parser.parse_args()
    c = client.TaskHubGrpcClient(host_address=args.address)
    if args.step in ("run", "start"):
        start(c, args.order_id, args.approval_seconds)
    if args.step in ("run", "awaiting"):
        if not awaiting_approval(c, args.order_id, args.timeout):
            print(f"{args.order_id} did not reach its approval step", file=sys.stderr)
            return 1
        print(f"{args.order_id} is awaiting approval")
    if args.step in ("run", "approve"):
        approve(c, args.order_id)
    if args.step in ("run", "wait"):
        return wait(c, args.order_id, args.timeout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
