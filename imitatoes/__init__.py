"""imitatoes: a self-improving image loop for ComfyUI, judged by a local vision model."""

__version__ = "0.1.0"
