"""UI-format workflows (what ComfyUI's Save writes: litegraph `nodes` and `links`) turned into
the API format ComfyUI runs, as its own frontend does (`app.graphToPrompt()`): widget values
mapped to inputs by the server's node definitions, links resolved through Reroute nodes,
PrimitiveNode values inlined, notes dropped, muted nodes left out, bypassed nodes wired
around and subgraphs unpacked. Values are kept as written; what cannot be converted is
refused with its node id."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from imitatoes.errors import WorkflowError
from imitatoes.workflow import catalogue
from imitatoes.workflow.nodecheck import limits

NOTES = frozenset({"Note", "MarkdownNote"})
WIDGET_TYPES = frozenset({"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"})
MUTED, BYPASSED = 2, 4  # litegraph modes: NEVER, and the frontend's BYPASS
UPLOAD_FLAGS = ("image_upload", "video_upload", "audio_upload", "animated_image_upload")
# Widgets the frontend shows but does not send: "control after generate" after a seed, and
# the upload button after a file choice.
CONTROL, UPLOAD = "<control after generate>", "<upload>"


UNKNOWN = "unknown here"


class Unconvertible(WorkflowError):
    """The workflow has parts that cannot become API format; one line per node."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        unknown = all(UNKNOWN in p for p in problems)
        super().__init__("this UI-format workflow cannot be converted:\n  " +
                         "\n  ".join(problems) + (
                             "\nget each node as its line says, then try again" if unknown else
                             "\nexport it with Workflow > Export (API) in ComfyUI instead, or "
                             "fix the nodes named above"))


def is_ui_format(data: Any) -> bool:
    return isinstance(data, dict) and isinstance(data.get("nodes"), list) and "links" in data


@dataclass(frozen=True)
class _Link:
    origin: int
    slot: int
    type: str


@dataclass(frozen=True)
class _Value:
    value: Any


def to_api(ui: Mapping[str, Any], info: Mapping[str, Any],
           server_version: str | None = None) -> dict[str, Any]:
    """The API-format workflow of a UI-format one, given the server's /object_info (or our
    own catalogue: `server_version` None)."""
    problems: list[str] = []
    try:
        flat_nodes, flat_links = _unpacked(ui)
        nodes = {n["id"]: n for n in flat_nodes if isinstance(n, dict) and "id" in n}
        links = _links(flat_links)
    except _Refused as exc:
        raise Unconvertible([str(exc)]) from None
    except (KeyError, TypeError, AttributeError, IndexError, ValueError) as exc:
        raise Unconvertible([f"its nodes or links are not as ComfyUI saves them ({exc!r}); "
                             "open it in ComfyUI and save it again"]) from None
    place = {node_id: i for i, node_id in enumerate(nodes)}
    out: dict[str, Any] = {}
    for node_id in sorted(nodes, key=lambda n: _order(n, place[n])):
        node = nodes[node_id]
        kind = str(node.get("type"))
        if kind in NOTES or kind in ("Reroute", "PrimitiveNode") or \
                node.get("mode") in (MUTED, BYPASSED):
            continue
        definition = info.get(kind)
        if not isinstance(definition, dict):
            problems.append(f"node {node_id} ({kind}): {UNKNOWN}; "
                            + catalogue.what_is(kind, node.get("properties"), server_version))
            continue
        try:
            inputs = _inputs(node, definition, nodes, links)
        except _Refused as exc:
            problems.append(f"node {node_id} ({kind}): {exc}")
            continue
        except (KeyError, TypeError, AttributeError, IndexError, ValueError) as exc:
            problems.append(f"node {node_id} ({kind}): not as ComfyUI saves a node ({exc!r}); "
                            "open the workflow in ComfyUI and save it again")
            continue
        title = node.get("title") or definition.get("display_name") or kind
        out[str(node_id)] = {"inputs": inputs, "class_type": kind,
                             "_meta": {"title": title, **_origin(node.get("properties"))}}
    if problems:
        raise Unconvertible(problems)
    if not out:
        raise Unconvertible(["no node is left to run (all notes, muted or bypassed)"])
    return out


class _Refused(Exception):
    pass


def _order(node_id: Any, place: int) -> tuple[int, int]:
    """Ascending numeric ids, as JavaScript orders integer-like keys; the others (a subgraph's
    nodes, "20:6") after them in the order they were added."""
    return (0, int(node_id)) if str(node_id).isdigit() else (1, place)


class _Level:
    """One graph of the workflow: the top one, or a subgraph's definition as used by one
    subgraph node (`instance`, in `parent`); its nodes' API ids start with `prefix`."""

    def __init__(self, graph: Mapping[str, Any], prefix: str = "",
                 parent: _Level | None = None, instance: Mapping[str, Any] | None = None
                 ) -> None:
        self.nodes = [n for n in graph.get("nodes") or [] if isinstance(n, dict) and "id" in n]
        self.by_id = {n["id"]: n for n in self.nodes}
        self.links = _links(graph.get("links") or [])
        self.ends = {link["target_slot"]: (link["origin_id"], link["origin_slot"])
                     for link in graph.get("links") or []
                     if isinstance(link, dict) and link.get("target_id") == SUBGRAPH_OUT}
        self.prefix, self.parent, self.instance = prefix, parent, instance

    def key(self, node_id: Any) -> Any:
        return f"{self.prefix}{node_id}" if self.prefix else node_id


SUBGRAPH_IN, SUBGRAPH_OUT = -10, -20  # a subgraph's input and output nodes in its links


def _unpacked(ui: Mapping[str, Any]) -> tuple[list[dict[str, Any]], list[list[Any]]]:
    """The nodes and links with every subgraph unpacked as the frontend does for a prompt: a
    subgraph's node N inside subgraph node 20 becomes node "20:N" ("21:20:N" nested), a
    link into a subgraph input or out of a subgraph output joins the links on both sides,
    and a bypassed subgraph node is wired around."""
    definitions = ui.get("definitions") or {}
    subgraphs = {g["id"]: g for g in _renumbered(ui, definitions.get("subgraphs") or [])}
    if not subgraphs:
        return list(ui["nodes"]), list(ui.get("links") or [])
    unpacker = _Unpacker(subgraphs)
    unpacker.unpack(_Level(ui), 0)
    return unpacker.nodes, unpacker.links


def _renumbered(ui: Mapping[str, Any], definitions: list[Any]) -> list[dict[str, Any]]:
    """The subgraph definitions as the frontend loads them: a subgraph node whose id is
    already taken (by a node of the main graph or of an earlier subgraph) gets the next free
    id after the graph's last one, and the subgraph's links follow it."""
    taken = {str(n.get("id")) for n in ui.get("nodes") or [] if isinstance(n, dict)}
    state = ui.get("state") if isinstance(ui.get("state"), dict) else {}
    last = state.get("lastNodeId", ui.get("last_node_id", 0))
    last = last if isinstance(last, int) and not isinstance(last, bool) and last >= 0 else 0
    out = []
    for graph in (g for g in definitions if isinstance(g, dict) and "id" in g):
        moved: dict[Any, int] = {}
        nodes = []
        for node in graph.get("nodes") or []:
            node_id = node.get("id") if isinstance(node, dict) else None
            if str(node_id) in taken:
                last += 1
                while str(last) in taken:
                    last += 1
                moved[node_id] = last
                node = dict(node, id=last)
            elif isinstance(node_id, int) and not isinstance(node_id, bool):
                last = max(last, node_id)
            taken.add(str(node.get("id")) if isinstance(node, dict) else "")
            nodes.append(node)
        links = [_relinked(link, moved) for link in graph.get("links") or []]
        out.append(dict(graph, nodes=nodes, links=links) if moved else dict(graph))
    return out


def _relinked(link: Any, moved: Mapping[Any, int]) -> Any:
    if not moved or not isinstance(link, dict):
        return link
    return dict(link, origin_id=moved.get(link.get("origin_id"), link.get("origin_id")),
                target_id=moved.get(link.get("target_id"), link.get("target_id")))


class _Unpacker:
    def __init__(self, subgraphs: dict[Any, Mapping[str, Any]]) -> None:
        self.subgraphs = subgraphs
        self.nodes: list[dict[str, Any]] = []
        self.links: list[list[Any]] = []
        self.levels: dict[str, _Level] = {}  # by prefix: each subgraph node's graph read once

    def source(self, level: _Level, link_id: Any, depth: int) -> tuple[Any, int] | None:
        """The real output behind a link of `level` (a node's key and output slot)."""
        if link_id not in level.links:
            return None
        origin, slot, _ = level.links[link_id]
        return self.output(level, origin, slot, depth)

    def output(self, level: _Level, origin: Any, slot: int, depth: int
               ) -> tuple[Any, int] | None:
        if depth > 50:
            return None
        if origin == SUBGRAPH_IN:  # what feeds the subgraph node's input there
            inputs = (level.instance or {}).get("inputs") or []
            link = inputs[slot].get("link") if slot < len(inputs) else None
            return self.source(level.parent, link, depth + 1) if level.parent else None
        node = level.by_id.get(origin)
        if node is None:
            return None
        if node.get("type") in self.subgraphs and node.get("mode") == BYPASSED:
            upstream = _passed_through(node, slot, "")  # wired around, as any bypassed node
            return self.source(level, upstream, depth + 1)
        if node.get("type") in self.subgraphs:  # out of a subgraph: what feeds its output
            inner = self.inside(level, node)
            end = inner.ends.get(slot)
            return self.output(inner, end[0], end[1], depth + 1) if end else None
        return level.key(origin), slot

    def inside(self, level: _Level, node: Mapping[str, Any]) -> _Level:
        # A muted or bypassed subgraph node's nodes are still sent (frontend 1.27.10 does;
        # what nothing reads, ComfyUI never runs), and muting it changes nothing there.
        prefix = f"{level.key(node['id'])}:"
        if prefix not in self.levels:
            self.levels[prefix] = _Level(self.subgraphs[node["type"]], prefix, level, node)
        return self.levels[prefix]

    def unpack(self, level: _Level, depth: int) -> None:
        if depth > 20:
            raise _Refused("its subgraphs are nested more than 20 deep")
        for node in level.nodes:
            if node.get("type") in self.subgraphs:
                self.unpack(self.inside(level, node), depth + 1)
            else:
                self.nodes.append(self.copied(level, node))

    def copied(self, level: _Level, node: Mapping[str, Any]) -> dict[str, Any]:
        """A node of `level` under its unpacked id, each input linked to its real source."""
        copy = dict(node, id=level.key(node["id"]))
        copy["inputs"] = []
        for index, slot in enumerate(node.get("inputs") or []):
            found = self.source(level, slot.get("link"), 0) \
                if slot.get("link") is not None else None
            link_id = None
            if found is not None:
                link_id = len(self.links) + 1
                self.links.append([link_id, found[0], found[1], copy["id"], index,
                                   slot.get("type")])
            copy["inputs"].append(dict(slot, link=link_id))
        return copy


def _links(raw: list[Any]) -> dict[int, tuple[int, int, str]]:
    """link id -> (origin node, origin slot, type), from 0.4 lists or version-1 objects."""
    out = {}
    for link in raw:
        if isinstance(link, list) and len(link) >= 6:
            out[link[0]] = (link[1], link[2], str(link[5]))
        elif isinstance(link, dict):
            out[link["id"]] = (link["origin_id"], link["origin_slot"], str(link.get("type")))
    return out


def widget_names(definition: Mapping[str, Any]) -> list[str]:
    """The node's widgets in the order the frontend makes them (and `widgets_values` holds
    their values): each widget input, required then optional, with the slots the frontend
    adds after some of them."""
    names = []
    for section in ("required", "optional"):
        for name, config in ((definition.get("input") or {}).get(section) or {}).items():
            if not _is_widget(config):
                continue
            names.append(name)
            extra = limits(config)
            if extra.get("control_after_generate"):
                names.append(CONTROL)
            if any(extra.get(flag) for flag in UPLOAD_FLAGS):
                names.append(UPLOAD)
    return names


# What the frontend (1.58) copies from a node's properties into its _meta, checked as its
# zod schemas check them: the registry id of the node's pack, a GitHub pack's owner and repo,
# and the pack's version (a semantic version, a commit hash, or "unknown").
_PACK_ID = re.compile(r"^(?![_.-])[A-Za-z0-9_.-]{1,100}(?<![_.-])$")
_GITHUB_OWNER = re.compile(r"^(?!-)(?!.*--)[a-zA-Z0-9-]{1,39}(?<!-)$")
_SEMVER = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-([\da-z-]+(?:\.[\da-z-]+)*))?"
                     r"(?:\+([\da-z-]+(?:\.[\da-z-]+)*))?$")
_COMMIT = re.compile(r"^[0-9a-f]{4,40}$", re.IGNORECASE)


def _origin(properties: Any) -> dict[str, Any]:
    """cnr_id, aux_id and ver of a node's pack, where the node's properties hold valid ones."""
    props = properties if isinstance(properties, Mapping) else {}
    out: dict[str, Any] = {}
    cnr, aux, ver = props.get("cnr_id"), props.get("aux_id"), props.get("ver")
    if isinstance(cnr, str) and _PACK_ID.match(cnr):
        out["cnr_id"] = cnr
    if isinstance(aux, str) and aux.count("/") == 1:
        owner, repo = aux.split("/")
        if _GITHUB_OWNER.match(owner) and _PACK_ID.match(repo):
            out["aux_id"] = [owner, repo]  # the frontend's schema splits it
    if isinstance(ver, str):
        bare = ver[1:] if ver.startswith("v") else ver
        if _SEMVER.match(bare) or _COMMIT.match(bare):
            out["ver"] = bare
        elif ver == "unknown":
            out["ver"] = ver
    return out


def _defaults(definition: Mapping[str, Any], names: list[str]) -> list[Any]:
    """The values a widget starts with in the frontend: its default, else a combo's first
    choice, else zero, an empty text or false."""
    configs = {**((definition.get("input") or {}).get("required") or {}),
               **((definition.get("input") or {}).get("optional") or {})}
    out: list[Any] = []
    for name in names:
        config = configs.get(name)
        if not isinstance(config, list):  # the slots the frontend adds: control, upload
            out.append(None)
            continue
        options = config[0] if isinstance(config[0], list) else limits(config).get("options")
        empty = {"INT": 0, "FLOAT": 0.0, "STRING": "", "BOOLEAN": False}.get(str(config[0]))
        default = limits(config).get("default", options[0] if options else empty)
        out.append(default)
    return out


def _is_widget(config: Any) -> bool:
    if not isinstance(config, list) or not config:
        return False
    return (isinstance(config[0], list) or config[0] in WIDGET_TYPES) and \
        not limits(config).get("forceInput")


def _inputs(node: Mapping[str, Any], definition: Mapping[str, Any],
            nodes: Mapping[Any, Any], links: Mapping[int, tuple[int, int, str]]
            ) -> dict[str, Any]:
    names = widget_names(definition)
    values = node.get("widgets_values") or []
    if not values:  # saved with none (ComfyUI's own default graph): each widget's default
        values = _defaults(definition, names)
    if isinstance(values, dict):  # some custom nodes save widgets by name
        values = [values.get(n) for n in names]
    if not isinstance(values, list):
        raise _Refused(f"its widget values are {type(values).__name__}, not a list")
    if len(values) < len(names):
        shown = ", ".join(n for n in names if not n.startswith("<"))
        raise _Refused(f"{len(values)} widget values for its widgets ({shown}); open it in "
                       "this ComfyUI and save it again")
    inputs: dict[str, Any] = {name: value for name, value in zip(names, values, strict=False)
                              if not name.startswith("<")}
    for slot in node.get("inputs") or []:
        link = slot.get("link")
        if link is None:
            continue
        found = _resolve(link, nodes, links, set())
        name = slot["name"]
        if isinstance(found, _Value):
            inputs[name] = found.value
        elif isinstance(found, _Link):
            inputs[name] = [str(found.origin), found.slot]
    return inputs


def _resolve(link_id: int, nodes: Mapping[Any, Any], links: Mapping[int, tuple[int, int, str]],
             seen: set[int]) -> _Link | _Value | None:
    """Where a link's value really comes from: through Reroutes and bypassed nodes to a real
    node's output, or a PrimitiveNode's value; None when nothing reaches it (a muted node)."""
    if link_id in seen or link_id not in links:
        return None
    seen.add(link_id)
    origin_id, slot, kind = links[link_id]
    origin = nodes.get(origin_id)
    if origin is None:
        return None
    if origin.get("type") == "PrimitiveNode":
        values = origin.get("widgets_values") or [None]
        return _Value(values[0])
    if origin.get("type") == "Reroute" or origin.get("mode") == BYPASSED:
        upstream = _passed_through(origin, slot, kind)
        return _resolve(upstream, nodes, links, seen) if upstream is not None else None
    if origin.get("mode") == MUTED:
        return None
    return _Link(origin_id, slot, kind)


def _passed_through(node: Mapping[str, Any], slot: int, kind: str) -> int | None:
    """The input link a Reroute or a bypassed node passes on for output `slot`: the input at
    the same index when its type matches, else the first input of the output's type."""
    inputs = node.get("inputs") or []
    if node.get("type") == "Reroute":
        return inputs[0].get("link") if inputs else None
    outputs = node.get("outputs") or []
    want = outputs[slot].get("type", kind) if slot < len(outputs) else kind
    candidates = ([inputs[slot]] if slot < len(inputs) else []) + list(inputs)
    for candidate in candidates:
        if candidate.get("link") is not None and _same_type(candidate.get("type"), want):
            return candidate["link"]
    return None


def _same_type(a: Any, b: Any) -> bool:
    return a == b or "*" in (a, b)
