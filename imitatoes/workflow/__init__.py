"""The API and UI formats of ComfyUI workflows: reading, binding, samplers, refine graphs.
The lowest layer above the base modules: it knows nothing of specs or runs."""
