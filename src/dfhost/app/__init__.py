"""A function app as dfhost runs it: its folder loaded (v1 `function.json` folders or a v2
`function_app.py`), its functions, their bindings, and how user code is called."""
