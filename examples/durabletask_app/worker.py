"""A Durable Task SDK worker for dfhost: order processing with the usual patterns.

    dfhost serve --store sqlite:///orders.sqlite3 --grpc-port 4001
    python worker.py                      # connects to localhost:4001
    python client.py run order-1          # in another terminal

`process_order` chains activities (validate, then charge), fans out over the items and in
again (price each, sum), retries a payment gateway that fails twice, ships through a
sub-orchestration that continues as new for each leg of the journey, and waits for an
approval event, with a timeout.
"""

from __future__ import annotations

import argparse
import logging
import threading
from datetime import timedelta
from typing import Any

from durabletask import task, worker

PRICES = {"apple": 3, "pear": 4, "plum": 2}
LEGS = ["warehouse", "hub", "doorstep"]

_charge_attempts: dict[str, int] = {}
_lock = threading.Lock()


def validate(ctx: task.ActivityContext, order: dict[str, Any]) -> dict[str, Any]:
    if not order.get("items"):
        raise ValueError(f"order {order.get('id')} has no items")
    return order


def price_item(ctx: task.ActivityContext, item: str) -> int:
    return PRICES.get(item, 1)


def charge(ctx: task.ActivityContext, payment: dict[str, Any]) -> str:
    # A flaky gateway: the first two attempts of each order fail, the third goes through.
    with _lock:
        attempt = _charge_attempts.get(payment["order"], 0) + 1
        _charge_attempts[payment["order"]] = attempt
    if attempt < 3:
        raise ConnectionError(f"payment gateway unavailable (attempt {attempt})")
    return f"charged {payment['amount']} for {payment['order']} on attempt {attempt}"


def move(ctx: task.ActivityContext, shipment: dict[str, Any]) -> str:
    return f"{shipment['order']} reached {LEGS[shipment['leg']]}"


def ship(ctx: task.OrchestrationContext, shipment: dict[str, Any]) -> Any:
    """One leg per execution: continue_as_new keeps the history short however long the trip."""
    log = [*shipment.get("log", []), (yield ctx.call_activity(move, input=shipment))]
    if shipment["leg"] + 1 < len(LEGS):
        ctx.continue_as_new({**shipment, "leg": shipment["leg"] + 1, "log": log})
        return None
    return log


def process_order(ctx: task.OrchestrationContext, order: dict[str, Any]) -> Any:
    order = yield ctx.call_activity(validate, input=order)
    prices = yield task.when_all([ctx.call_activity(price_item, input=i) for i in order["items"]])
    retry = task.RetryPolicy(
        first_retry_interval=timedelta(seconds=1), max_number_of_attempts=5, backoff_coefficient=1
    )
    payment = {"order": order["id"], "amount": sum(prices)}
    receipt = yield ctx.call_activity(charge, input=payment, retry_policy=retry)
    trip = yield ctx.call_sub_orchestrator(
        ship, input={"order": order["id"], "leg": 0}, instance_id=f"{ctx.instance_id}-ship"
    )
    ctx.set_custom_status("awaiting approval")
    approval = ctx.wait_for_external_event("approval")
    timeout = ctx.create_timer(timedelta(seconds=order.get("approval_seconds", 300)))
    winner = yield task.when_any([approval, timeout])
    decision = approval.get_result() if winner == approval else "timed out"
    ctx.set_custom_status("done")
    return {"total": sum(prices), "receipt": receipt, "trip": trip, "approval": decision}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--address", default="localhost:4001", help="dfhost's gRPC host:port")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with worker.TaskHubGrpcWorker(host_address=args.address) as w:
        for orchestrator in (process_order, ship):
            w.add_orchestrator(orchestrator)
        for activity in (validate, price_item, charge, move):
            w.add_activity(activity)
        w.start()
        print(f"worker connected to {args.address}", flush=True)
        threading.Event().wait()  # until Ctrl-C


if __name__ == "__main__":
    main()
