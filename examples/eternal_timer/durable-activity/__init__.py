"""The work of one cycle: logs, prints and takes a while (WORK_SECONDS, an app setting)."""

import logging
import os
import time

from shared_code import clock  # a module of the app's own, beside the function folders


def main(name: str) -> str:
    started = clock.local_time()
    logging.info("Activity %s started at %s", name, started)
    print(f"working on {name} ...")
    time.sleep(float(os.environ.get("WORK_SECONDS", "5")))
    return f"{name} done at {clock.local_time()}"
