import datetime

import azure.functions as func


def main(result: str, out: func.Out[func.EventGridOutputEvent]) -> None:
    out.set(
        func.EventGridOutputEvent(
            id="result-1",
            data={"result": result},
            subject="dfhost/results",
            event_type="Dfhost.Result",
            event_time=datetime.datetime.now(datetime.UTC),
            data_version="1.0",
        )
    )
