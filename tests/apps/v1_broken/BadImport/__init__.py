import dfhost_no_such_package  # noqa: F401  (deliberately missing)


def main(name: str) -> str:
    return name
