"""report.html: one self-contained page per run folder, to see oscillation, seed changes and
prompt bloat at a glance. Everything that came from the critic or a server is escaped."""

from __future__ import annotations

import base64
import io
from html import escape
from pathlib import Path

import yaml
from PIL import Image, UnidentifiedImageError

from . import patch, runfolder
from .imagecheck import NotAnImage
from .imagecheck import check as check_image
from .runfolder import IterationRecord

THUMB = 320

CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:24px;color:#222;background:#fafafa}
h1{font-size:22px;margin:0 0 4px} h2{font-size:17px;margin:28px 0 8px}
.meta{color:#555} .sheet{display:flex;flex-wrap:wrap;gap:12px}
.card{background:#fff;border:1px solid #ddd;border-radius:6px;padding:8px;width:330px}
.card.best{border-color:#2a7;box-shadow:0 0 0 2px #2a7} .card.done{border-color:#27a}
.card img{width:100%;border-radius:4px;display:block}
.k{font-weight:600} .score{float:right;font-variant-numeric:tabular-nums}
table{border-collapse:collapse;background:#fff;width:100%}
td,th{border:1px solid #ddd;padding:4px 6px;vertical-align:top;text-align:left}
mark{background:#ffe58a} .refused{color:#a33} .muted{color:#888}
.final img{max-width:512px;border:1px solid #ccc}
"""


def thumbnail(path: Path) -> str:
    """A small JPEG data URI, so the page stands alone without carrying every full PNG."""
    try:
        data = path.read_bytes()
        check_image(data)  # a huge or broken file gets no thumbnail, not a crash
        img = Image.open(io.BytesIO(data)).convert("RGB")
    except (OSError, UnidentifiedImageError, NotAnImage):
        return ""
    img.thumbnail((THUMB, THUMB))
    out = io.BytesIO()
    img.save(out, "JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(out.getvalue()).decode()


def marked(text: str, before: str) -> str:
    """The prompt with the terms that are new since the previous render highlighted."""
    old = {t.lower() for t in patch.terms(before)}
    return ", ".join(f"<mark>{escape(t)}</mark>" if before and t.lower() not in old
                     else escape(t) for t in patch.terms(text))


def chart(records: list[IterationRecord]) -> str:
    """cfg, steps and score across iterations as a small inline SVG (no scripts, no fetches)."""
    if len(records) < 2:
        return ""
    w, h, pad = 640, 160, 24
    series = {"cfg": [r.params.cfg for r in records],
              "steps": [r.params.steps for r in records],
              "score": [r.score or 0 for r in records]}
    colours = {"cfg": "#d55", "steps": "#36c", "score": "#2a7"}
    lines = []
    for name, values in series.items():
        lo, hi = min(values), max(values)
        span = (hi - lo) or 1
        pts = " ".join(f"{pad + i * (w - 2 * pad) / (len(values) - 1):.1f},"
                       f"{h - pad - (v - lo) / span * (h - 2 * pad):.1f}"
                       for i, v in enumerate(values))
        lines.append(f'<polyline fill="none" stroke="{colours[name]}" stroke-width="2" '
                     f'points="{pts}"/><text x="{pad}" y="{14 + 14 * len(lines)}" '
                     f'fill="{colours[name]}">{name} {lo:g}–{hi:g}</text>')
    return f'<svg width="{w}" height="{h}" role="img" aria-label="cfg, steps and score">' \
        + "".join(lines) + "</svg>"


def build(run_dir: Path) -> str:
    state = runfolder.read_state(run_dir)
    spec = yaml.safe_load((run_dir / "spec.yaml").read_text()) or {}
    records = runfolder.records(run_dir)
    best = state.best.key if state.best else None
    done = state.done_key
    cards, rows, previous = [], [], {"prompt": "", "negative": ""}
    for r in records:
        k, params = r.key, r.params
        score = "—" if r.score is None else f"{r.score:.2f}"
        cls = " ".join(c for c, on in (("best", k == best), ("done", k == done)) if on)
        cards.append(f'<div class="card {cls}"><a href="{escape(k)}.png"><img alt="{escape(k)}" '
                     f'src="{thumbnail(run_dir / f"{k}.png")}"></a><span class="k">{escape(k)}'
                     f'</span><span class="score">{score}</span><div class="muted">seed '
                     f'{params.seed} · cfg {params.cfg:g} · steps {params.steps}</div>'
                     f'<div>{escape(r.reason)}</div></div>')
        refused = "".join(f'<div class="refused">refused {escape(x.field)}: '
                          f'{escape(str(x.asked)[:200])} ({escape(x.reason)})</div>'
                          for x in r.refused)
        prompt = marked(params.prompt, previous["prompt"])
        rows.append(f"<tr><td>{escape(k)}</td><td>{prompt}"
                    f"</td><td>{marked(params.negative, previous['negative'])}</td>"
                    f"<td>{params.cfg:g}</td><td>{params.steps}</td><td>{params.seed}"
                    f"</td><td>{score}</td><td>{escape(r.reason)}</td><td>"
                    f"{escape('; '.join(r.applied or []) or 'nothing')}{refused}</td></tr>")
        previous = {"prompt": params.prompt, "negative": params.negative}
    requirements = "".join(f"<li>{escape(str(q))}</li>" for q in spec.get("requirements", []))
    final = '<div class="final"><h2>Final image</h2><a href="final.png"><img alt="final" ' \
        f'src="{thumbnail(run_dir / "final.png")}"></a></div>' \
        if (run_dir / "final.png").exists() else ""
    status = {"done": f"done at {done}", "limits": "limits reached without done"}.get(
        state.status, state.status)
    name, goal = escape(str(spec.get("name", ""))), escape(str(spec.get("goal", "")))
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width"><title>imitatoes · {name}</title>
<style>{CSS}</style></head><body>
<h1>{name}</h1>
<div class="meta">{goal}<br>{escape(status)} · {state.renders}
render(s) · best {escape(str(best))}</div>
<h2>Requirements</h2><ol>{requirements}</ol>
{final}
<h2>Iterations</h2><div class="sheet">{"".join(cards)}</div>
<h2>cfg, steps and score</h2>{chart(records)}
<h2>Prompts and changes</h2><table><tr><th>image</th><th>prompt (new terms marked)</th>
<th>negative</th><th>cfg</th><th>steps</th><th>seed</th><th>score</th><th>critic</th>
<th>applied</th></tr>{"".join(rows)}</table>
</body></html>
"""


def write(run_dir: Path) -> Path:
    path = run_dir / runfolder.REPORT
    runfolder.write_atomic(path, build(run_dir).encode("utf-8"))
    return path
