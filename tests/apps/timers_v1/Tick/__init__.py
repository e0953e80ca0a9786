import json
import os

import azure.functions as func


def main(mytimer: func.TimerRequest, context: func.Context) -> None:
    line = {
        "fn": context.function_name,
        "past_due": mytimer.past_due,
        "status": mytimer.schedule_status,
        "invocation_id": context.invocation_id,
    }
    with open(os.environ["DFHOST_TIMERS_LOG"], "a", encoding="utf-8") as log:
        log.write(json.dumps(line) + "\n")
