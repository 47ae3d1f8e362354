"""UI-format workflows to API format, checked against what ComfyUI's own frontend made of the
same files (tests/fixtures/comfyui-ui) and against its rules for reroutes, primitives,
muted and bypassed nodes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from imitatoes.workflow import ui as ui_workflow
from imitatoes.workflow.ui import Unconvertible
from tests.conftest import ROOT, found

FIXTURES = ROOT / "tests" / "fixtures"
PAIRS = FIXTURES / "comfyui-ui"  # upstream templates
OWN = FIXTURES / "comfyui-ui-own"  # ours: reroutes, primitives, muted and bypassed nodes
INFO = json.loads((FIXTURES / "comfyui/object_info_full.json").read_text())["response"]["body"]
CASES = found(sorted(p.with_name(p.name[:-len(".ui.json")]) for folder in (PAIRS, OWN)
                     for p in folder.glob("*.ui.json")), "UI-format workflow pairs")


def load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


@pytest.mark.parametrize("case", CASES, ids=lambda p: p.name)
def test_same_as_comfyuis_frontend(case: Path) -> None:
    ui = load(case.with_name(f"{case.name}.ui.json"))
    got = ui_workflow.to_api(ui, INFO)
    want = load(case.with_name(f"{case.name}.api.json"))
    titled = {str(n["id"]) for n in ui["nodes"] if n.get("title")}
    for node_id, node in want.items():
        # The frontend names nodes the server leaves unnamed from its own translations
        # (ImageScaleToTotalPixels: "Scale Image to Total Pixels"); we use the class name.
        if not INFO[node["class_type"]].get("display_name") and node_id not in titled:
            assert got[node_id]["_meta"]["title"] == node["class_type"]
            got[node_id]["_meta"] = node["_meta"]
    for node in got.values():  # frontend 1.27.10 made these: it did not copy the node's pack
        node["_meta"] = {k: v for k, v in node["_meta"].items()
                         if k not in ("cnr_id", "aux_id", "ver")}
    assert json.dumps(got) == json.dumps(want)  # the same keys in the same order


def img2img() -> dict[str, Any]:
    return load(PAIRS / "image2image.ui.json")


def node(ui: dict[str, Any], node_id: int) -> dict[str, Any]:
    return next(n for n in ui["nodes"] if n["id"] == node_id)


def test_a_bypassed_node_is_wired_around() -> None:
    ui = img2img()
    node(ui, 18)["mode"] = 4  # ImageScaleToTotalPixels, between LoadImage and VAEEncode
    api = ui_workflow.to_api(ui, INFO)
    assert "18" not in api and api["12"]["inputs"]["pixels"] == ["10", 0]


def test_a_muted_node_is_left_out_with_what_it_fed() -> None:
    ui = img2img()
    node(ui, 18)["mode"] = 2
    api = ui_workflow.to_api(ui, INFO)
    assert "18" not in api and "pixels" not in api["12"]["inputs"]


def test_a_reroute_is_followed_to_the_real_output() -> None:
    ui = img2img()
    ui["nodes"].append({"id": 50, "type": "Reroute", "mode": 0,
                        "inputs": [{"name": "", "type": "*", "link": 13}],
                        "outputs": [{"name": "", "type": "MODEL", "links": [51]}]})
    ui["links"] = [[13, 14, 0, 50, 0, "MODEL"] if link[0] == 13 else link
                   for link in ui["links"]] + [[51, 50, 0, 3, 0, "MODEL"]]
    node(ui, 3)["inputs"][0]["link"] = 51
    api = ui_workflow.to_api(ui, INFO)
    assert "50" not in api and api["3"]["inputs"]["model"] == ["14", 0]


def test_a_primitive_is_inlined_where_its_widget_was() -> None:
    ui = img2img()
    ui["nodes"].append({"id": 60, "type": "PrimitiveNode", "mode": 0,
                        "outputs": [{"name": "INT", "type": "INT", "links": [61],
                                     "widget": {"name": "seed"}}],
                        "widgets_values": [777, "fixed"]})
    ui["links"].append([61, 60, 0, 3, 4, "INT"])
    node(ui, 3)["inputs"].append({"name": "seed", "type": "INT", "link": 61,
                                  "widget": {"name": "seed"}})
    api = ui_workflow.to_api(ui, INFO)
    assert "60" not in api and api["3"]["inputs"]["seed"] == 777
    assert list(api["3"]["inputs"])[0] == "seed"  # a widget's place, not a link's


def test_notes_control_after_generate_and_upload_buttons_are_not_sent() -> None:
    api = ui_workflow.to_api(img2img(), INFO)
    assert {n["class_type"] for n in api.values()}.isdisjoint({"MarkdownNote", "Note"})
    assert "randomize" not in json.dumps(api["3"]) and api["10"]["inputs"] == {
        "image": "example.png"}


def test_what_cannot_be_converted_is_refused_with_each_node() -> None:
    ui = img2img()
    ui["nodes"].append({"id": 70, "type": "FancyCustomNode", "mode": 0, "widgets_values": []})
    node(ui, 3)["widgets_values"] = node(ui, 3)["widgets_values"][:4]
    with pytest.raises(Unconvertible) as caught:
        ui_workflow.to_api(ui, INFO)
    assert caught.value.problems == [
        "node 3 (KSampler): 4 widget values for its widgets (seed, steps, cfg, sampler_name, "
        "scheduler, denoise); open it in this ComfyUI and save it again",
        "node 70 (FancyCustomNode): unknown here; probably from a custom node pack that is not "
        "installed"]


def test_a_subgraph_s_nodes_are_unpacked_with_their_links_joined() -> None:
    """Recorded pairs above check the frontend's output byte for byte; here the rule: inner
    node N of subgraph node 20 is "20:N", and links join across the subgraph's borders."""
    got = ui_workflow.to_api(load(OWN / "image2image_sg_nested.ui.json"), INFO)
    assert got["21:3"]["inputs"]["positive"] == ["21:20:6", 0]  # out of the inner subgraph
    assert got["21:20:6"]["inputs"]["clip"] == ["14", 1]  # in through both subgraphs' inputs
    assert got["8"]["inputs"]["samples"] == ["21:3", 0]  # out of the outer one
    around = ui_workflow.to_api(load(OWN / "image2image_sg_bypass.ui.json"), INFO)
    assert around["12"]["inputs"]["pixels"] == ["10", 0]  # a bypassed subgraph: wired around


def test_version_1_links_as_objects(tmp_path: Path) -> None:
    ui = img2img()
    ui["links"] = [{"id": lk[0], "origin_id": lk[1], "origin_slot": lk[2], "target_id": lk[3],
                    "target_slot": lk[4], "type": lk[5]} for lk in ui["links"]]
    assert ui_workflow.to_api(ui, INFO) == ui_workflow.to_api(img2img(), INFO)


@pytest.mark.parametrize("damage", [
    lambda u: node(u, 3).__setitem__("inputs", "x"),
    lambda u: [i.pop("name") for i in node(u, 3)["inputs"]],
    lambda u: node(u, 3).__setitem__("widgets_values", "abc"),
    lambda u: u.__setitem__("links", [{"id": 1}]),
    lambda u: u["nodes"][0].__setitem__("id", [1]),
])
def test_a_damaged_file_is_refused_not_a_crash(damage) -> None:
    ui = img2img()
    damage(ui)
    with pytest.raises(Unconvertible, match="ComfyUI saves|widget values"):
        ui_workflow.to_api(ui, INFO)
