def main(name: str) -> str:
    return f"{name}!"
