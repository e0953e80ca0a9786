import os

import azure.functions as func


def main(result: str, out: func.Out[str]) -> None:
    out.set([os.environ["REDIS_OUT"], result])  # RPUSH key value
