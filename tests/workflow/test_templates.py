"""The text-to-image templates ComfyUI ships, converted offline with imitatoes' own catalogue
of ComfyUI 0.3.64, against what ComfyUI's own frontend made of each (tests/fixtures/templates:
frontend 1.27.10 for the templates 0.3.64 pins, 1.58.1 for today's)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from imitatoes.workflow import catalogue
from imitatoes.workflow import ui as ui_workflow
from imitatoes.workflow.ui import Unconvertible
from tests.conftest import ROOT, found

TEMPLATES = ROOT / "tests" / "fixtures" / "templates"
PAIRS = found(sorted(TEMPLATES.glob("0.*/*.ui.json")), "template pairs")
NEWER = found(sorted((TEMPLATES / "0.11.97-newer").glob("*.ui.json.gz")), "newer templates")
ORIGIN = ("cnr_id", "aux_id", "ver")  # what frontend 1.58 copies into _meta and 1.27 did not


def name(path: Path) -> str:
    return f"{path.parent.name}/{path.name.split('.ui.json')[0]}"


@pytest.mark.parametrize("path", PAIRS, ids=name)
def test_same_as_comfyuis_frontend(path: Path) -> None:
    ui = json.loads(path.read_text())
    want = json.loads(path.with_name(path.name.replace(".ui.json", ".api.json")).read_text())
    info = catalogue.core()
    got = ui_workflow.to_api(ui, info)
    titled = {str(n["id"]) for n in ui["nodes"] if n.get("title")}
    for node_id, node in want.items():
        # The frontend names nodes the server leaves unnamed from its own translations
        # (ImageScaleToTotalPixels: "Scale Image to Total Pixels"); we use the class name.
        if not info[node["class_type"]].get("display_name") and node_id not in titled:
            assert got[node_id]["_meta"]["title"] == node["class_type"]
            got[node_id]["_meta"]["title"] = node["_meta"]["title"]
    if path.parent.name == "0.1.95":
        for node in got.values():
            node["_meta"] = {k: v for k, v in node["_meta"].items() if k not in ORIGIN}
    assert json.dumps(got) == json.dumps(want)  # the same keys in the same order


def test_both_frontends_and_both_packages_are_there() -> None:
    folders = {p.parent.name for p in PAIRS}
    assert folders == {"0.1.95", "0.11.97"}
    assert len(PAIRS) == 60 and len(NEWER) == 40


@pytest.mark.parametrize("path", NEWER, ids=lambda p: p.name.split(".")[0])
def test_a_template_for_a_newer_comfyui_names_each_missing_node(path: Path) -> None:
    ui = json.loads(gzip.decompress(path.read_bytes()))
    with pytest.raises(Unconvertible) as caught:
        ui_workflow.to_api(ui, catalogue.core())
    assert caught.value.problems
    for line in caught.value.problems:
        assert "unknown here; a core node of ComfyUI 0." in line, line
        assert "imitatoes' own catalogue (0.3.64) lacks" in line, line


def test_what_a_missing_node_is() -> None:
    earliest = catalogue.newer_core()["ComfySwitchNode"]  # what the templates say
    newer = {"cnr_id": "comfy-core", "ver": "0.18.1"}  # a later save of it
    assert catalogue.what_is("ComfySwitchNode", newer, "0.3.64").startswith(
        f"a core node of a newer ComfyUI ({earliest} or later; this one is 0.3.64)")
    assert catalogue.what_is("ComfySwitchNode", {"ver": "0.3.70"}, "0.3.64").startswith(
        "a core node of a newer ComfyUI (0.3.70 or later")
    assert "did not load" in catalogue.what_is("LoadAudio", None, "0.3.64")
    assert catalogue.what_is("LoadAudio", None, "0.2.0").startswith("a core node of a newer")
    assert catalogue.what_is("Whatever", {"cnr_id": "comfyui-impact-pack"}, "0.3.64") == \
        "from the custom node pack 'comfyui-impact-pack', not installed"
    assert catalogue.what_is("Whatever", None, "0.3.64") == \
        "probably from a custom node pack that is not installed"
    assert "give --comfy-url" in catalogue.what_is("Flux2Scheduler")
