# dfhost does not run Service Bus triggers, so it must not even import this module.
raise AssertionError("dfhost imported a function whose trigger it does not run")


def main(msg) -> None:
    pass
