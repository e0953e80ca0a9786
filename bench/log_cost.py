"""What one function run's Executing/Executed console lines cost the event loop's thread.

    .venv/bin/python bench/log_cost.py [--pairs 5000] [--rounds 7]

Logs `--pairs` Executing/Executed pairs (`dfhost.logs.log_invocation`) with the console
configured as `dfhost start` configures it (INFO, the console format, the dashboard's
per-instance handler) into a temporary file, and prints the best round's microseconds per
pair. A 3-activity chain (W1) logs 7 pairs: 4 orchestrator episodes and 3 activities. Run it
with PYTHONPATH=OTHER/src to time another checkout.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time

from dfhost.logs import Invocation, configure_console, keep_instance_logs, log_invocation


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryFile("w") as console:
        configure_console(stream=console)
        keep_instance_logs()
        inv = Invocation(function="inc", instance_id="abc123", execution_id="e1")
        best = float("inf")
        for _ in range(args.rounds):
            began = time.perf_counter()
            for _ in range(args.pairs):
                with log_invocation(inv, "(null), InstanceId=abc123"):
                    pass
            best = min(best, (time.perf_counter() - began) / args.pairs * 1e6)
    sys.__stdout__.write(f"{best:.1f} us per Executing/Executed pair (best of {args.rounds})\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
