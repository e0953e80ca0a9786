import azure.functions as func


def main(result: str, out: func.Out[str]) -> None:
    out.set(result)
