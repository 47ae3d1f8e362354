"""The outside world the loop talks to: ComfyUI, the critic backends, HTTP deadlines."""
