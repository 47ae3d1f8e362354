"""`imitatoes replay`: render one iteration of a run again, exactly as recorded, and say
whether the image is the same and, when it is not, what changed that could explain it. The
run folder is left as it was except for a new folder under replays/."""

from __future__ import annotations

import io
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from PIL import Image, ImageChops, ImageStat

from imitatoes.clients.comfy import client_for, renderer_for
from imitatoes.errors import ImitatoesError
from imitatoes.loop import binder
from imitatoes.loop.state import RefineState
from imitatoes.runs import folder as runfolder
from imitatoes.runs import provenance
from imitatoes.spec.model import as_dict

FOLDER = "replays"


@dataclass(frozen=True)
class Replayed:
    key: str
    url: str  # the ComfyUI that rendered it again
    identical: bool
    difference: float  # mean absolute difference per channel, 0 to 255
    changed: tuple[str, ...]  # what differs in the provenance, then -> now
    folder: Path  # replays/<time>_<key>/: the new image, a diff image, the result

    @property
    def exit_code(self) -> int:
        return 0 if self.identical else 3


def replay(run_dir: Path, key: str | None = None, overrides: list[str] | None = None
           ) -> Replayed:
    spec = runfolder.load_spec(run_dir, overrides)
    key = key or _final_key(run_dir)
    record = runfolder.read_record(run_dir, key)
    saved = run_dir / f"{key}.png"
    if record is None or not saved.is_file():
        raise ImitatoesError(f"{run_dir} has no finished iteration {key}; give one of: "
                             + ", ".join(r.key for r in runfolder.records(run_dir)))
    folder = run_dir / FOLDER / f"{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}_{key}"
    folder.mkdir(parents=True, exist_ok=True)
    client = client_for(spec.comfyui)
    try:
        # ComfyUI would serve an identical prompt from its cache: drop the cache first (its
        # worker applies the flag when it wakes, so give it a moment before submitting).
        client.free(unload_models=False, free_memory=True)
        time.sleep(0.5)
        renderer = renderer_for(spec.comfyui, client)
        # As the engine made it: the same binder, the recorded refine state, its source image.
        refine = RefineState.from_dict(record.refine) if record.refine else None
        sub = binder.submission(spec, record.params, refine,
                                lambda source: _saved_image(run_dir, source), renderer.upload)
        if refine is not None and sub.refine is None:
            raise ImitatoesError(f"{run_dir} no longer holds {refine.source}.png, the image "
                                 f"{key} was refined from; it cannot be made again")
        image = renderer.render(sub.workflow, lambda value, maximum: None).image
    finally:
        client.close()
    runfolder.write_atomic(folder / "image.png", image)
    identical, difference = _compare(saved.read_bytes(), image, folder)
    now = provenance.gather(spec, folder)
    # The run's own spec is what replays, so only the servers and what they hold can differ.
    changed = tuple(provenance.changes(provenance.latest(run_dir), now, ignore=("spec",)))
    result = Replayed(key, spec.comfyui.url, identical, difference, changed, folder)
    runfolder.write_atomic(folder / "result.json", runfolder.to_json(
        {**as_dict(result), "folder": str(folder), "params": as_dict(record.params),
         "provenance_now": now}))
    return result


def _saved_image(run_dir: Path, key: str) -> bytes | None:
    try:
        return (run_dir / f"{key}.png").read_bytes()
    except OSError:
        return None


def _final_key(run_dir: Path) -> str:
    state = runfolder.read_state(run_dir)
    key = state.done_key or (state.best.key if state.best else None)
    if key is None:
        raise ImitatoesError(f"{run_dir} has no judged image yet; give an iteration, e.g. "
                             "loop_01_iter_01")
    return key


def _compare(before: bytes, after: bytes, folder: Path) -> tuple[bool, float]:
    """Pixel by pixel (PNG metadata aside); a difference image when they differ."""
    a, b = (Image.open(io.BytesIO(data)).convert("RGB") for data in (before, after))
    if a.size != b.size:
        return False, 255.0
    diff = ImageChops.difference(a, b)
    if diff.getbbox() is None:
        return True, 0.0
    mean = sum(ImageStat.Stat(diff).mean) / 3
    diff.point(lambda v: min(255, v * 8)).save(folder / "difference.png")
    return False, round(mean, 3)


def describe(result: Replayed) -> str:
    url = result.url
    head = (f"replayed {result.key} on ComfyUI {url}: identical" if result.identical else
            f"replayed {result.key} on ComfyUI {url}: different (mean difference "
            f"{result.difference:g} of 255; see {result.folder / 'difference.png'})")
    lines = [head, f"new image: {result.folder / 'image.png'}"]
    if result.changed:
        lines.append("changed since the run was recorded:")
        lines += [f"  {c}" for c in result.changed]
    else:
        lines.append("nothing recorded about ComfyUI, its nodes and models, the critic or the "
                     "spec has changed" + ("" if result.identical else
                                           " (something unrecorded did: a custom node's code, "
                                           "a model file replaced under the same name, drivers)"))
    return "\n".join(lines)


def to_dict(result: Replayed) -> dict[str, Any]:
    return {**as_dict(result), "folder": str(result.folder)}
