"""Goal specs: the model (plain dataclasses, no third-party imports), the loader that reads a
spec and its workflow once, lint, knobs, and init (a spec made from a workflow)."""
