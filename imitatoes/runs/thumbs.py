"""Small images for the report, made once per render and kept in the run folder
(thumbs/loop_01_iter_01.jpg), so rewriting the report after every iteration never decodes
the full renders again."""

from __future__ import annotations

import base64
import io
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from imitatoes.clients.imagecheck import NotAnImage
from imitatoes.clients.imagecheck import check as check_image
from imitatoes.runs.folder import write_atomic

SIZE = 384
FOLDER = "thumbs"


def make(data: bytes, picture: Image.Image | None = None) -> bytes | None:
    """A JPEG at most SIZE px on its longest edge, from the decoded `picture` of `data` when
    there is one (decoding costs more than the rest); None for anything that is not an
    image."""
    if picture is not None:
        factor = max(picture.size) // SIZE
        img = picture.reduce(factor) if factor >= 2 else picture.convert("RGB")  # a new image
    else:
        try:
            check_image(data)
            img = Image.open(io.BytesIO(data))
            img.draft("RGB", (SIZE, SIZE))  # JPEGs decode at 1/2, 1/4 or 1/8 size: cheaper
            img = img.convert("RGB")
        except (OSError, UnidentifiedImageError, NotAnImage):
            return None
    img.thumbnail((SIZE, SIZE), Image.Resampling.BILINEAR, reducing_gap=1.0)  # a preview
    out = io.BytesIO()
    img.save(out, "JPEG", quality=80)
    return out.getvalue()


def path(run_dir: Path, key: str) -> Path:
    return run_dir / FOLDER / f"{key}.jpg"


def save(run_dir: Path, key: str, data: bytes, picture: Image.Image | None = None) -> None:
    """From the image the critic saw (already small) when the verdict arrives."""
    small = make(data, picture)
    if small is None:
        return
    path(run_dir, key).parent.mkdir(exist_ok=True)
    write_atomic(path(run_dir, key), small)


def data_uri(run_dir: Path, key: str) -> str:
    """The thumbnail as a data URI; made from the PNG now if it was never made."""
    target = path(run_dir, key)
    if not target.is_file():
        try:
            save(run_dir, key, (run_dir / f"{key}.png").read_bytes())
        except OSError:
            return ""
    try:
        return "data:image/jpeg;base64," + base64.b64encode(target.read_bytes()).decode()
    except OSError:
        return ""
