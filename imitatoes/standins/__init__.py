"""Loopback stand-ins for ComfyUI and Ollama: real HTTP servers speaking the recorded protocols,
for the tests, `imitatoes demo` and anyone without a GPU."""
