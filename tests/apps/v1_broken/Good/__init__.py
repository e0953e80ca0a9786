# A relative import, as the official serialize_arguments sample does: only works when the
# function folder is imported as a sub-package of the app (`__app__.Good`).
from ..shared_code.greeting import greet


def main(name: str) -> str:
    return greet(name)
