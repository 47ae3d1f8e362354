"""report.html: one self-contained page per run folder, rewritten after every iteration while
the run goes (the page reloads itself until the run ends), to see at a glance what was asked,
what the critic saw requirement by requirement, and where cfg, steps, seed and the prompt went.
Everything that came from the critic or a server is escaped; the page fetches nothing."""

from __future__ import annotations

import base64
import contextlib
import time
from concurrent.futures import ThreadPoolExecutor
from html import escape
from pathlib import Path
from typing import Any

import yaml

from imitatoes.errors import ImitatoesError
from imitatoes.loop import events as ev
from imitatoes.loop import patch
from imitatoes.loop.state import RunState
from imitatoes.runs import charts, provenance, thumbs
from imitatoes.runs import folder as runfolder
from imitatoes.runs.folder import IterationRecord

REFRESH_SECONDS = 5

CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:24px;color:#222;background:#fafafa}
h1{font-size:22px;margin:0 0 4px} h2{font-size:17px;margin:28px 0 8px}
.meta{color:#555} .sheet{display:flex;flex-wrap:wrap;gap:12px}
.card{background:#fff;border:1px solid #ddd;border-radius:6px;padding:8px;width:330px}
.card.best{border-color:#2a7;box-shadow:0 0 0 2px #2a7} .card.done{border-color:#27a}
.card img{width:100%;border-radius:4px;display:block}
.shot{position:relative;display:block}
.region{position:absolute;border:2px dashed #e33;box-sizing:border-box;pointer-events:none}
.k{font-weight:600} .score{float:right;font-variant-numeric:tabular-nums}
table{border-collapse:collapse;background:#fff} .wide{width:100%}
td,th{border:1px solid #ddd;padding:4px 6px;vertical-align:top;text-align:left}
mark{background:#ffe58a} .refused{color:#a33} .muted{color:#888} .yours{color:#a60}
.final img{max-width:100%;border:1px solid #ccc}
.matrix td{text-align:center;min-width:2.2em} .met{background:#dff3e4;color:#185}
.unmet{background:#fbe3e3;color:#a22} .unjudged{background:#eee;color:#888}
.chart{background:#fff;border:1px solid #ddd;margin:0 12px 12px 0} .chart text{font-size:11px}
.chart .title{font-size:13px;font-weight:600} .axis{stroke:#555} .grid{stroke:#eee}
.cands{margin-top:6px;font-size:12px;color:#666} .cand{display:inline-block;width:64px;
margin-right:6px;text-align:center;color:#666} .cand img{width:64px}
.compare{display:flex;gap:12px} .compare figure{margin:0;flex:1} .compare img{width:100%}
"""

COMPARE_JS = """
function show(side){var key=document.getElementById('pick'+side).value;
var card=document.getElementById('card-'+key);
document.getElementById('img'+side).src=card?card.querySelector('img').src:'';
document.getElementById('cap'+side).textContent=card?card.dataset.caption:'';}
show('a');show('b');
"""


class ReportWriter(ev.Handler):
    """A listener: the report after every iteration (at most every MIN_GAP seconds while the
    run goes, always at its end), from thumbnails made as verdicts come."""

    MIN_GAP = 2.0  # iterations faster than this (instant stand-ins) need no page of their own

    def __init__(self, run_dir: Path) -> None:
        self.dir = run_dir
        self.spec: dict[str, Any] | None = None  # the spec as run: parsed once
        self.last = float("-inf")
        self.ended = False  # the page of the run's end is written
        # Off the loop's path: thumbnails and pages are made while the loop waits on the
        # servers, in order, by one thread; the end of the run waits for them.
        self.worker = ThreadPoolExecutor(1, thread_name_prefix="report")

    def on_verdict(self, event: ev.Judged) -> None:
        image = event.judgement.image
        self.worker.submit(thumbs.save, self.dir, event.key, image.data, image.picture)

    def _running(self, event: ev.IterationEnded | ev.LoopEnded) -> None:
        if time.monotonic() - self.last >= self.MIN_GAP:
            self.last = time.monotonic()
            self.worker.submit(self._write, event.state)

    def _final(self, event: ev.Done | ev.LimitsReached | ev.Interrupted | ev.Failed) -> None:
        self.worker.submit(self._write, event.state)
        self.worker.shutdown(wait=True)  # the page is whole before the run says it ended
        self.ended = True

    def _write(self, state: RunState) -> None:
        if self.spec is None:
            self.spec = _spec(self.dir)
        with contextlib.suppress(ImitatoesError, OSError, ValueError):  # never stops a run
            write(self.dir, state, self.spec)

    on_iteration_ended = on_loop_ended = _running
    on_done = on_limits_reached = on_interrupted = on_error = _final


def write(run_dir: Path, state: RunState | None = None,
          spec: dict[str, Any] | None = None) -> Path:
    path = run_dir / runfolder.REPORT
    runfolder.write_atomic(path, build(run_dir, state, spec).encode("utf-8"))
    return path


def _spec(run_dir: Path) -> dict[str, Any]:
    return yaml.safe_load((run_dir / "spec.yaml").read_text()) or {}


def build(run_dir: Path, state: RunState | None = None,
          spec: dict[str, Any] | None = None) -> str:
    state = state or runfolder.read_state(run_dir)
    spec = spec if spec is not None else _spec(run_dir)
    records = runfolder.records(run_dir)
    running = state.status == "running"
    refresh = f'<meta http-equiv="refresh" content="{REFRESH_SECONDS}">' if running else ""
    name = escape(str(spec.get("name", "")))
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width">{refresh}<title>imitatoes · {name}</title>
<style>{CSS}</style></head><body>
<h1>{name}</h1>
{_summary(spec, state, records, runfolder.read_servers(run_dir))}{_made_with(run_dir)}
<h2>Requirements</h2>{_requirements(spec, state)}
{_final(run_dir, state)}
<h2>Requirement by requirement</h2>{_matrix(spec, state, records)}
<h2>Score, cfg and steps</h2>{_charts(spec, records)}
<h2>Compare two iterations</h2>{_compare(records, state)}
<h2>Iterations</h2><div class="sheet">{_cards(run_dir, state, records)}</div>
<h2>Prompts, changes and timings</h2>{_table(records)}
{f"<script>{COMPARE_JS}</script>" if len(records) > 1 else ""}
</body></html>
"""


def _summary(spec: dict[str, Any], state: RunState, records: list[IterationRecord],
             servers: runfolder.Servers | None) -> str:
    status = {"done": f"done at {state.done_key}", "limits": "limits reached without done",
              "running": f"running (this page reloads every {REFRESH_SECONDS} s)"}.get(
        state.status, state.status)
    best = f"{state.best.key} (score {state.best.score:.2f})" if state.best else "none yet"
    render = sum(r.seconds.get("render", 0) for r in records)
    critique = sum(r.seconds.get("critique", 0) for r in records)
    critic, comfy = spec.get("critic") or {}, spec.get("comfyui") or {}
    critic_url = servers.critic if servers else critic.get("url", "?")
    comfy_url = servers.comfyui if servers else comfy.get("url", "?")
    search = spec.get("search") or {}
    k = int(search.get("candidates", 1) or 1)
    searching = ", ".join(filter(None, [
        f"{k} candidates an iteration ({k} renders and {k} critiques each)" if k > 1 else "",
        "done claims verified" if search and search.get("verify_done", True) else "",
        "head-to-head against the best" if search.get("head_to_head") else ""]))
    return (f'<div class="meta">{escape(str(spec.get("goal", "")))}<br>{escape(status)} · '
            f"{state.renders} render(s) · loop {state.loop} of {state.last_loop} · best "
            f"{escape(best)}" + (f"<br>search: {escape(searching)}" if searching else "") +
            f"<br>time: {render:.1f} s rendering, {critique:.1f} s critiquing"
            f"<br>critic: {escape(str(critic.get('model', '?')))} at "
            f"{escape(str(critic_url))} · ComfyUI at {escape(str(comfy_url))}</div>")


def _made_with(run_dir: Path) -> str:
    """What made the images, from provenance.json: enough to tell two setups apart."""
    p = provenance.latest(run_dir)
    if not p:
        return ""
    comfy, critic, git = p.get("comfyui") or {}, p.get("critic") or {}, \
        (p.get("spec") or {}).get("git")
    device = ", ".join(str(d.get("name")) for d in comfy.get("devices") or [])
    details = critic.get("details") or {}
    where = (f"spec at {str(git.get('commit'))[:10]}" + (" (with uncommitted changes)"
                                                          if git.get("dirty") else "")
             if git else "spec not in git")
    return (f'<div class="meta">made with imitatoes {escape(str(p.get("imitatoes")))} · '
            f"ComfyUI {escape(str(comfy.get('version')))} on {escape(device or '?')} · "
            f"{escape(str(critic.get('model')))} {escape(str(details.get('parameter_size', '')))} "
            f"{escape(str(details.get('quantization_level', '')))} digest "
            f"{escape(str(critic.get('digest') or '?')[:12])} · {escape(where)} "
            "(provenance.json has it all)</div>")


def _requirements(spec: dict[str, Any], state: RunState) -> str:
    spec_items = "".join(f"<li>{escape(str(q))}</li>" for q in spec.get("requirements", []))
    yours = "".join(f'<li>{escape(i)} <span class="yours">(your instruction)</span></li>'
                    for i in state.instructions)
    remembered = "".join(f'<p class="yours">memory: {escape(m)}</p>' for m in state.from_memory)
    return f"<ol>{spec_items}{yours}</ol>{remembered}"


def _final(run_dir: Path, state: RunState) -> str:
    """The final image at full size once the run has ended; the best so far while it runs."""
    chosen = state.done_key or (state.best.key if state.best else None)
    final = run_dir / f"{chosen}.png"  # what final.png is a copy of
    if state.status != "running" and chosen and final.is_file():
        src = "data:image/png;base64," + base64.b64encode(final.read_bytes()).decode()
        title = f"Final image: {chosen}"
    elif state.best:
        src, title = thumbs.data_uri(run_dir, state.best.key), f"Best so far: {state.best.key}"
    else:
        return ""
    return f'<div class="final"><h2>{escape(title)}</h2><img alt="final" src="{src}"></div>'


def _matrix(spec: dict[str, Any], state: RunState, records: list[IterationRecord]) -> str:
    """Iteration by requirement: met, unmet, or not judged; the critic's words on hover."""
    wanted = [str(q) for q in spec.get("requirements", [])] + list(state.instructions)
    head = "".join(f"<th>{escape(_short(r.key))}</th>" for r in records)
    rows = []
    for n, text in enumerate(wanted):
        cells = "".join(_cell(r.requirements[n] if n < len(r.requirements) else None)
                        for r in records)
        rows.append(f"<tr><th>{n + 1}. {escape(text)}</th>{cells}</tr>")
    return f'<table class="matrix"><tr><th>requirement</th>{head}</tr>{"".join(rows)}</table>'


def _cell(item: Any) -> str:
    if item is None or item.met is None:
        return '<td class="unjudged" title="not judged">–</td>'
    cls, mark = ("met", "✓") if item.met else ("unmet", "✗")
    return f'<td class="{cls}" title="{escape(item.observation)}">{mark}</td>'


def _charts(spec: dict[str, Any], records: list[IterationRecord]) -> str:
    bounds = spec.get("bounds") or {}
    labels = [_short(r.key) for r in records]

    def span(name: str, values: list[float]) -> tuple[float, float]:
        b = bounds.get(name) or {}
        return (min([b.get("min", min(values))] + values),
                max([b.get("max", max(values))] + values))

    cfgs, steps = [r.params.cfg for r in records], [float(r.params.steps) for r in records]
    return "".join([
        charts.line_chart("score (share of requirements met)", labels,
                          [r.score for r in records], 0.0, 1.0, "#2a7"),
        charts.line_chart("cfg (scale: the spec's bounds)", labels, cfgs, *span("cfg", cfgs),
                          "#d55") if records else "",
        charts.line_chart("steps (scale: the spec's bounds)", labels, steps,
                          *span("steps", steps), "#36c") if records else "",
        *_knob_charts(spec, records, labels), _repeat_chart(records, labels)])


def made_as(records: list[IterationRecord]) -> list[int]:
    """For each iteration, the position of the first one made with the same settings (params,
    knobs, refine state, seed): its own, unless it repeats an earlier image."""
    first: dict[str, int] = {}
    out = []
    for n, r in enumerate(records):
        out.append(first.setdefault(r.made_by, n))
    return out


def _repeat_chart(records: list[IterationRecord], labels: list[str]) -> str:
    """Each image against the first made with its settings: new images climb the diagonal; a
    repeat (a replay on purpose, or a cycle) drops back to the image it repeats."""
    made = made_as(records)
    if not records or made == list(range(len(records))):
        return ""
    return charts.line_chart("made as (a drop: the same settings as an earlier image)", labels,
                             [float(m + 1) for m in made], 1.0, float(len(records)), "#888")


def _knob_charts(spec: dict[str, Any], records: list[IterationRecord], labels: list[str]
                 ) -> list[str]:
    """A chart per numeric knob, on the scale of the knob's bounds."""
    out = []
    for name, d in (spec.get("knobs") or {}).items():
        values = [dict(r.params.knobs).get(name) for r in records]
        numbers = [float(v) for v in values if isinstance(v, int | float)]
        if not records or len(numbers) != len(values) or "min" not in d or "max" not in d:
            continue
        out.append(charts.line_chart(f"{name} (scale: the knob's bounds)", labels, numbers,
                                     min([d["min"], *numbers]), max([d["max"], *numbers]),
                                     "#a5c"))
    return out




def _compare(records: list[IterationRecord], state: RunState) -> str:
    if len(records) < 2:
        return '<p class="muted">after the second image</p>'
    best = state.best.key if state.best else records[-1].key

    def picker(side: str, chosen: str) -> str:
        options = "".join(f'<option value="{escape(r.key)}"'
                          f'{" selected" if r.key == chosen else ""}>{escape(r.key)}</option>'
                          for r in records)
        return (f'<figure><select id="pick{side}" onchange="show(\'{side}\')">{options}'
                f'</select><img id="img{side}" alt=""><figcaption id="cap{side}"></figcaption>'
                "</figure>")

    return f'<div class="compare">{picker("a", records[0].key)}{picker("b", best)}</div>'


def _cards(run_dir: Path, state: RunState, records: list[IterationRecord]) -> str:
    best = state.best.key if state.best else None
    made = made_as(records)
    cards = []
    for n, r in enumerate(records):
        score = "—" if r.score is None else f"{r.score:.2f}"
        cls = " ".join(c for c, on in (("best", r.key == best), ("done", r.key == state.done_key))
                       if on)
        settings = " · ".join(filter(None, [
            f"seed {r.params.seed} · cfg {r.params.cfg:g} · steps {r.params.steps}",
            r.params.knob_text(" · ")]))
        if r.refine:
            settings += f" · refined from {r.refine.get('from')} at denoise " \
                        f"{r.refine.get('denoise')}"
        if made[n] != n:
            settings += f" · repeat of {records[made[n]].key} (the same settings)"
        caption = f"{r.key} · score {score} · {settings}"
        cards.append(
            f'<div class="card {cls}" id="card-{escape(r.key)}" data-caption="'
            f'{escape(caption)}"><a class="shot" href="{escape(r.key)}.png"><img '
            f'alt="{escape(r.key)}" src="{thumbs.data_uri(run_dir, r.key)}">{_region(r)}</a>'
            f'<span class="k">{escape(r.key)}'
            f'</span><span class="score">{score}</span><div class="muted">'
            f"{escape(settings)}</div>"
            f"<div>{escape(r.reason)}</div>{_extra(r)}{_others(run_dir, r)}</div>")
    return "".join(cards)


def _extra(r: IterationRecord) -> str:
    """What the critic judged that is no requirement (invented or about something else):
    shown, never counted."""
    if not r.extra:
        return ""
    said = "; ".join(f"{c.requirement} ({'met' if c.met else 'unmet'})" for c in r.extra)
    return f'<div class="muted">not counted, no requirement of the spec: {escape(said)}</div>'


def _region(r: IterationRecord) -> str:
    """refine.repair: the box that was repainted, drawn on the image (0-1000 coordinates)."""
    region = (r.refine or {}).get("region")
    box = region.get("box") if isinstance(region, dict) else None
    if not (isinstance(box, list) and len(box) == 4 and
            all(isinstance(v, int | float) for v in box)):
        return ""
    x0, y0, x1, y1 = (min(max(float(v) / 10, 0.0), 100.0) for v in box)
    title = f"repainted: {region.get('requirement', '')} ({region.get('fix', '')})"
    return (f'<span class="region" title="{escape(title)}" style="left:{x0:.1f}%;'
            f'top:{y0:.1f}%;width:{x1 - x0:.1f}%;height:{y1 - y0:.1f}%"></span>')


def _others(run_dir: Path, r: IterationRecord) -> str:
    """The candidates that were not chosen (search.candidates), small, with their scores."""
    shown = []
    for c in r.candidates or []:
        key = str(c.get("key"))
        if not (run_dir / f"{key}.png").is_file():
            continue  # the chosen one: it is this card
        score = "—" if c.get("score") is None else f"{c['score']:.2f}"
        shown.append(f'<a class="cand" href="{escape(key)}.png" title="{escape(key)} · seed '
                     f'{escape(str(c.get("seed")))} · score {score}"><img alt="{escape(key)}" '
                     f'src="{thumbs.data_uri(run_dir, key)}"><span>{score}</span></a>')
    return f'<div class="cands">also tried: {"".join(shown)}</div>' if shown else ""


def _table(records: list[IterationRecord]) -> str:
    rows, previous = [], {"prompt": "", "negative": ""}
    with_knobs = any(r.params.knobs for r in records)
    for r in records:
        p = r.params
        score = "—" if r.score is None else f"{r.score:.2f}"
        refused = "".join(f'<div class="refused">refused {escape(x.field)}: '
                          f"{escape(str(x.asked)[:200])} ({escape(x.reason)})</div>"
                          for x in r.refused)
        timing = f"{r.seconds.get('render', 0):.1f} / {r.seconds.get('critique', 0):.1f}"
        knobs = f"<td>{escape(p.knob_text(' · '))}</td>" if with_knobs else ""
        rows.append(f"<tr><td>{escape(r.key)}</td><td>{marked(p.prompt, previous['prompt'])}"
                    f"</td><td>{marked(p.negative, previous['negative'])}</td><td>{p.cfg:g}"
                    f"</td><td>{p.steps}</td><td>{p.seed}</td>"
                    f"{knobs}"
                    f"<td>{score}</td><td>{timing}</td>"
                    f"<td>{escape(r.reason)}</td><td>"
                    f"{escape('; '.join(r.applied or []) or 'nothing')}{refused}</td></tr>")
        previous = {"prompt": p.prompt, "negative": p.negative}
    return ('<table class="wide"><tr><th>image</th><th>prompt (new terms marked)</th>'
            "<th>negative</th><th>cfg</th><th>steps</th><th>seed</th>"
            f"{'<th>knobs</th>' if with_knobs else ''}<th>score</th>"
            "<th>render / critique s</th><th>critic</th><th>applied</th></tr>"
            f'{"".join(rows)}</table>')


def marked(text: str, before: str) -> str:
    """The prompt with the terms that are new since the previous render highlighted."""
    old = {t.lower() for t in patch.terms(before)}
    return ", ".join(f"<mark>{escape(t)}</mark>" if before and t.lower() not in old
                     else escape(t) for t in patch.terms(text))


def _short(key: str) -> str:
    """loop_02_iter_03 -> 2.3"""
    parts = key.split("_")
    return f"{int(parts[1])}.{int(parts[3])}" if len(parts) == 4 else key
