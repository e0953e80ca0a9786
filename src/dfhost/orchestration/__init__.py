"""Orchestrations without I/O: everything here is a function of its arguments (no asyncio, no
store access), which is what lets it be tested against hand-built histories.

- episode.py: what an episode takes and gives (EpisodeInput, the work types, EpisodeResult).
- replay.py: `run_episode`, the SDK run in-process over a history; it uses sdk.py (the SDK's
  patches and the task-id recorder), session.py (cached sessions for incremental episodes) and
  reconciler.py (what the SDK did -> history events and work; non-determinism; pitfalls).
- outcome.py: what the engine commits for a claimed instance, given the replay's result.
- entities.py, rewind.py, limits.py: entity batches, rewinding a failed execution, the limits
  an episode must keep.
"""
