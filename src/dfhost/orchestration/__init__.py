"""Orchestrations without I/O: the SDK run in-process over a history (replay, sessions, the
reconciler that turns what the SDK did into history events and work), entities, rewind and
the limits an episode must keep. No asyncio, no store access: everything here is a function of
its arguments, which is what lets it be tested against hand-built histories."""
