def main(text: str) -> str:
    return text.upper()
