def greet(name: str) -> str:
    return f"good {name}"
