import azure.functions as func


def main(mytimer: func.TimerRequest) -> None:
    raise AssertionError("a function with an invalid schedule must never run")
