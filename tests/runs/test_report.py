"""report.html: live while the run goes, built from thumbnails made once, and readable."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from imitatoes.commands.cli import app
from imitatoes.commands.lifecycle import Run
from imitatoes.loop import events as ev
from imitatoes.spec import load as specs
from tests.servers import DEMO, only_run, urls

runner = CliRunner()


def demo_run(servers, tmp_path: Path, listeners=()) -> Path:
    comfy, ollama = servers
    spec = specs.load(DEMO, env={"IMITATOES_COMFY_URL": comfy.url,
                                 "IMITATOES_OLLAMA_URL": ollama.url})
    return Run.begin(spec, tmp_path / "runs").execute(list(listeners)).run_dir


def test_the_report_is_rewritten_while_the_run_goes(servers, tmp_path: Path) -> None:
    seen: list[str] = []

    def peek(event: ev.Event) -> None:  # the page is made off the loop's path: wait for it
        if isinstance(event, ev.IterationStarted) and event.iteration == 2:
            page = only_run(tmp_path) / "report.html"
            deadline = time.monotonic() + 10
            while not page.is_file() and time.monotonic() < deadline:
                time.sleep(0.01)
            seen.append(page.read_text())

    run_dir = demo_run(servers, tmp_path, [peek])
    assert 'http-equiv="refresh"' in seen[0] and seen[0].count('class="card') == 1
    assert "Best so far: loop_01_iter_01" in seen[0]
    final = (run_dir / "report.html").read_text()
    assert 'http-equiv="refresh"' not in final  # the run has ended: no more reloading
    assert "Final image: " in final


def test_rewrites_never_decode_the_renders_again(servers, tmp_path: Path) -> None:
    run_dir = demo_run(servers, tmp_path)
    thumbs = sorted(p.stem for p in (run_dir / "thumbs").glob("*.jpg"))
    assert thumbs == sorted(p.stem for p in run_dir.glob("loop_*.png"))
    for png in run_dir.glob("loop_*.png"):
        png.write_bytes(b"not an image any more")  # a decode would fail; nothing decodes
    assert runner.invoke(app, ["report", str(run_dir)]).exit_code == 0
    html = (run_dir / "report.html").read_text()
    assert html.count('src="data:image/jpeg;base64,') == len(thumbs)


def test_matrix_charts_and_timings(servers, tmp_path: Path) -> None:
    run_dir = demo_run(servers, tmp_path)
    html = (run_dir / "report.html").read_text()
    records = [json.loads(p.read_text()) for p in sorted(run_dir.glob("loop_*.json"))]
    cells = re.findall(r'<td class="(met|unmet|unjudged)"', html)
    assert len(cells) == 4 * len(records)
    assert cells.count("met") == sum(i["met"] is True for r in records
                                     for i in r["requirements"])
    assert 'title="the image is grainy with noise"' in html  # the critic's words on hover
    cfg_chart = html[html.index('aria-label="cfg'):]
    assert ">3</text>" in cfg_chart and ">12</text>" in cfg_chart  # the bounds, not the data
    assert "render / critique s" in html and "qwen2.5vl:7b" in html


@pytest.mark.skipif(not shutil.which("chromium"), reason="chromium is not installed")
def test_the_report_in_a_headless_browser(servers, tmp_path: Path) -> None:
    assert runner.invoke(app, ["run", DEMO, *urls(servers)]).exit_code == 0
    run_dir = only_run(tmp_path)
    browser = ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
               "--disable-background-networking", "--disable-component-update",
               "--disable-sync", f"--user-data-dir={tmp_path / 'chrome'}",
               "--window-size=1200,2600"]
    page = (run_dir / "report.html").as_uri()
    dom = subprocess.run([*browser, "--dump-dom", page], capture_output=True, text=True,
                         timeout=60).stdout
    assert "demo-red-circle" in dom
    # The compare view's script ran: both sides show an image and its caption.
    assert re.search(r'id="imga" alt="" src="data:image/jpeg', dom)
    assert re.search(r'id="capb">loop_\d\d_iter_\d\d · score 1.00', dom)
    shot = tmp_path / "report.png"
    subprocess.run([*browser, f"--screenshot={shot}", page], capture_output=True, timeout=60)
    assert shot.stat().st_size > 50_000  # a page with pictures, not a blank one
