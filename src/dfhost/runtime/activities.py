"""One activity execution: the function called with its input decoded as the Python worker
decodes it, its result encoded as the SDK expects, and failures, timeouts and results that
cannot be encoded turned into TaskFailed events, worded as on Azure
(`dfhost.orchestration.failures`). Durable HTTP calls run here too."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from dfhost.app.bindings import invocation_arguments
from dfhost.app.functions import FunctionApp
from dfhost.app.invoke import FunctionTimeoutError, call_function, within
from dfhost.config import Limits
from dfhost.history import EventType, HistoryEvent
from dfhost.logs import Invocation, log_invocation
from dfhost.orchestration import failures, limits
from dfhost.runtime import durable_http
from dfhost.runtime.triggers.bindings_io import has_io, shared_io
from dfhost.runtime.worker_threads import WorkerThreads
from dfhost.work import ActivityTask

__all__ = ["ActivityRunner"]


class ActivityRunner:
    """Runs activities of `app`; synchronous ones on `threads`."""

    def __init__(
        self,
        app: FunctionApp,
        limits_: Limits,
        threads: WorkerThreads,
        clock: Callable[[], datetime],
    ) -> None:
        self.app = app
        self.limits = limits_
        self.threads = threads
        self.clock = clock

    async def run(self, task: ActivityTask) -> HistoryEvent:
        """Execute `task` once; its TaskCompleted or TaskFailed event."""
        now = self.clock
        if task.name == durable_http.ACTIVITY_NAME:
            return await durable_http.run(task, now, self.app.settings.http)
        function = self.app.activity(task.name)
        if function is None:
            return _failed(task, now(), failures.activity_missing(task.name))
        inv = Invocation(
            function=function.name, instance_id=task.instance_id, execution_id=task.execution_id
        )
        try:
            with log_invocation(inv, f"(null), InstanceId={task.instance_id}"):
                trigger_value = _decode_activity_input(task.input)
                # Blob/redis inputs and queue/blob/... outputs (runtime/triggers/bindings_io.py).
                io = shared_io(self.app.settings.triggers) if has_io(function) else None
                bound = trigger_value if isinstance(trigger_value, dict) else {}
                kwargs, outputs = invocation_arguments(
                    function,
                    invocation_id=inv.id,
                    trigger_value=trigger_value,
                    inputs=await io.fetch_inputs(function, bound) if io else None,
                )
                value = await within(
                    self.limits.function_timeout,
                    call_function(function, kwargs, self.threads.run),
                    f"activity '{function.name}'",
                )
                # The Python worker encodes the result after the call; on Azure, a value
                # it cannot encode fails the activity like any exception of the function.
                result = _df_dumps(value)
                what = f"result of activity '{function.name}'"
                limits.check_payload(result, what, self.limits.payload_bytes)
                if io is not None:
                    await io.deliver(function, outputs, value, bound, return_is_output=False)
        except FunctionTimeoutError as exc:
            assert self.limits.function_timeout is not None
            failure = failures.activity_timed_out(function.name, self.limits.function_timeout)
            logging.getLogger("function").error("%s", exc)
            return _failed(task, now(), failure)
        except Exception as exc:
            failure = failures.activity_failed(function.name, exc)
            trace = failures.python_traceback(exc)
            logging.getLogger("function").error("%s\n%s", failure.reason, trace)
            return _failed(task, now(), failure)
        return HistoryEvent(
            type=EventType.TASK_COMPLETED,
            timestamp=now(),
            task_scheduled_id=task.task_scheduled_id,
            result=result,
        )


_PLAIN_JSON = (type(None), bool, int, float, str)
_sdk_decoded_once = False


def _decode_activity_input(text: str | None) -> Any:
    # Same decoding as the Python worker's ActivityTriggerConverter: JSON (with the SDK's
    # custom-object envelope), falling back to the raw string.
    from azure.durable_functions.models.utils.df_serialization import df_loads

    global _sdk_decoded_once
    if text is None:
        return None
    try:
        # Without an envelope, df_loads (loose or strict) is json.loads; skipping it saves
        # an environment lookup per activity. Its first call still runs, for its one-time
        # advisory.
        if _sdk_decoded_once and '"__class__"' not in text:
            return json.loads(text)
        _sdk_decoded_once = True
        return df_loads(text)
    except json.JSONDecodeError:
        return text


def _failed(task: ActivityTask, now: datetime, failure: failures.TaskFailure) -> HistoryEvent:
    return task.failed_event(now, failure.reason, failure.details)


def _df_dumps(value: Any) -> str:
    from azure.durable_functions.models.utils.df_serialization import df_dumps

    if type(value) in _PLAIN_JSON:  # no custom object inside: df_dumps is json.dumps
        return json.dumps(value)
    return df_dumps(value)  # type: ignore[no-any-return]
