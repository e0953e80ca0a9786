# The entry point should be `main` (or function.json should say "entryPoint": "run").
def run(name: str) -> str:
    return name
