"""The loop: the engine (a state machine), search, judging, patching, the run state, the
events it emits and the ports it needs. Plain Python: no network, no disk."""
