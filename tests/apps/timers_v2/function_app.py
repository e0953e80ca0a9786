"""Timer-triggered functions for tests/timers. Each run appends one JSON line to the file named
by DFHOST_TIMERS_LOG; tests switch off the functions they don't watch with
AzureWebJobs.<name>.Disabled."""

import json
import os
import time

import azure.durable_functions as df
import azure.functions as func

app = df.DFApp()


def record(name: str, timer: func.TimerRequest, started: float, **extra: object) -> None:
    line = {
        "fn": name,
        "pid": os.getpid(),
        "start": started,
        "end": time.time(),
        "past_due": timer.past_due,
        "status": timer.schedule_status,
        "schedule": timer.schedule,
        **extra,
    }
    # One short O_APPEND write per line: whole lines even from several processes.
    with open(os.environ["DFHOST_TIMERS_LOG"], "a", encoding="utf-8") as log:
        log.write(json.dumps(line) + "\n")


@app.timer_trigger(schedule="*/2 * * * * *", arg_name="timer")
def slow(timer: func.TimerRequest) -> None:
    started = time.time()
    time.sleep(float(os.environ.get("DFHOST_SLOW_SECONDS", "3")))
    record("slow", timer, started)


@app.timer_trigger(schedule="0 * * * * *", arg_name="timer")
async def every_minute(timer: func.TimerRequest) -> None:
    record("every_minute", timer, time.time())


@app.timer_trigger(schedule="%TICK_SCHEDULE%", arg_name="timer", use_monitor=False)
def tick(timer: func.TimerRequest) -> None:
    record("tick", timer, time.time())


@app.timer_trigger(schedule="0 0 0 1 Jan *", arg_name="timer", run_on_startup=True)
@app.durable_client_input(client_name="client")
async def starter(timer: func.TimerRequest, client: df.DurableOrchestrationClient) -> None:
    started = time.time()
    instance_id = await client.start_new("greet", "from-timer", "timer")
    record("starter", timer, started, instance_id=instance_id)


@app.orchestration_trigger(context_name="context")
def greet(context: df.DurableOrchestrationContext):
    return f"hello {context.get_input()}"
