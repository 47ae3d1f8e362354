"""The sidebar in a real ComfyUI, driven by Chromium: the tab opens, Start on the default graph
(at 128x128, two steps: a CPU) with the Ollama stand-in shows iteration cards as renders
finish, Stop then Resume goes on in the same run folder, and Save spec writes a spec that
`imitatoes validate` accepts.

Runs when IMITATOES_SIDEBAR_COMFY_URL names a ComfyUI started with this node pack and
IMITATOES_BIN (`../shared/tools/real-comfyui/start.sh ROOT PORT nodes .`), Debian's chromium
is at /usr/bin/chromium and playwright is importable; skips otherwise."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from imitatoes.standins.ollama import OllamaStandin

URL = os.environ.get("IMITATOES_SIDEBAR_COMFY_URL", "").rstrip("/")
CHROMIUM = "/usr/bin/chromium"
playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
pytestmark = [pytest.mark.live, pytest.mark.skipif(
    not URL or not shutil.which(CHROMIUM),
    reason="needs IMITATOES_SIDEBAR_COMFY_URL (ComfyUI with the pack) and /usr/bin/chromium")]

SMALL_DEFAULT_GRAPH = """async (ollama) => {
    await app.extensionManager.setting.set('Imitatoes.OllamaURL', ollama);
    for (const n of app.graph._nodes) {
        if (n.type === 'EmptyLatentImage') { n.widgets[0].value = 128; n.widgets[1].value = 128; }
        if (n.type === 'KSampler') { n.widgets.find(w => w.name === 'steps').value = 2; }
    }
}"""


def text(page, selector: str) -> str:
    return page.evaluate(f"document.querySelector('{selector}').textContent")


def cards(page) -> list[str]:
    return page.evaluate("[...document.querySelectorAll('.imitatoes-card')]"
                         ".map(c => c.dataset.key)")


def test_start_watch_stop_resume_save_in_comfyui(tmp_path: Path) -> None:
    with OllamaStandin() as ollama, playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(URL)
        page.wait_for_function("window.app && window.app.extensionManager && window.app.graph",
                               timeout=120_000)
        time.sleep(1)
        page.evaluate(SMALL_DEFAULT_GRAPH, ollama.url)
        for _ in range(3):  # the templates dialog a fresh ComfyUI opens
            page.keyboard.press("Escape")
        page.click(".imitatoes-tab-button")
        page.wait_for_selector("#imitatoes-start")
        page.wait_for_function("document.querySelectorAll('.imitatoes-bindings select').length"
                               " > 0", timeout=60_000)  # what init chose, shown before Start
        page.fill(".imitatoes-requirement", "Sharp and clean, no noise")
        page.click("text=+ requirement")
        page.locator(".imitatoes-requirement").nth(1).fill("A red circle")
        clicked = time.monotonic()
        page.click("#imitatoes-start")
        page.wait_for_selector(".imitatoes-card", timeout=120_000)
        first_card = time.monotonic() - clicked
        assert text(page, ".imitatoes-problems") == ""
        page.click("#imitatoes-stop")
        page.wait_for_function("document.querySelector('.imitatoes-status').textContent"
                               ".startsWith('interrupted')", timeout=60_000)
        before = cards(page)
        page.fill("input[placeholder='Further instruction']", "a blue background")
        page.click("#imitatoes-resume")
        page.wait_for_function(f"document.querySelectorAll('.imitatoes-card').length > "
                               f"{len(before)}", timeout=120_000)
        page.wait_for_function("/^(done|limits|interrupted|failed):/.test(document."
                               "querySelector('.imitatoes-status').textContent)",
                               timeout=180_000)
        page.click("#imitatoes-save")
        page.wait_for_function("document.querySelector('.imitatoes-status').textContent"
                               ".startsWith('saved')")
        saved = text(page, ".imitatoes-status").split()[1]
        run = page.evaluate("fetch('/imitatoes/runs').then(r => r.json())")[0]
        first = page.evaluate("r => fetch('/imitatoes/run?run=' + r).then(a => a.json())",
                              run["run"])["cards"][0]
        browser.close()
    checked = subprocess.run([sys.executable, "-m", "imitatoes", "validate", saved],
                             capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    record = json.loads(Path(saved).read_text())
    assert record["requirements"] == ["Sharp and clean, no noise", "A red circle"]
    assert run["renders"] >= 2  # the resumed run went on in the same folder
    took = first["seconds"]  # the first render (a model load included) and critique
    ours = first_card - took.get("render", 0) - took.get("critique", 0)
    print(f"start to first card: {first_card:.2f} s; render {took.get('render', 0):.2f} s, "
          f"critique {took.get('critique', 0):.2f} s; ours {ours:.2f} s")
