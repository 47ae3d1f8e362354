"""Imitatoes for ComfyUI: a node that folds a critic's verdict into the prompt, for loops built
inside the graph. Copy this folder into ComfyUI/custom_nodes and restart ComfyUI.

Standard library only: ComfyUI's Python does not have the imitatoes package."""

from __future__ import annotations

import contextlib
import json
import re

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]

WEB_DIRECTORY = "./web"  # the Imitatoes sidebar tab (web/imitatoes.js)

DONE_WORDS = {"done", "ok", "okay", "approved", "perfect", "good", "yes", "pass"}
FENCE = re.compile(r"```(?:json|JSON)?\s*\n?(.*?)```", re.S)


def _terms(text):
    return [t.strip() for t in str(text).split(",") if t.strip()]


def _norm(text):
    return re.sub(r"\s+", " ", re.sub(r"[^\w\s]", " ", str(text).lower())).strip()


def _present(term, text):
    needle = _norm(term)
    return bool(needle) and f" {needle} " in f" {_norm(text)} "


def append_terms(text, addition, max_chars=0, max_terms=0):
    """Add the terms that are not there yet, whole terms only, within the caps."""
    for term in _terms(addition):
        if _present(term, text):
            continue
        candidate = f"{text}, {term}" if text.strip() else term
        if max_chars and len(candidate) > max_chars:
            continue
        if max_terms and len(_terms(candidate)) > max_terms:
            continue
        text = candidate
    return text


def read_verdict(critique):
    """(done, prompt_append, neg_append, reason) from a JSON verdict or plain text."""
    text = str(critique or "").strip()
    if not text:
        return False, "", "", "no critique yet"
    data = _json_object(text)
    if isinstance(data, dict):
        changes = data.get("changes") if isinstance(data.get("changes"), dict) else {}
        checklist = data.get("checklist")
        done = data.get("done") is True
        if isinstance(checklist, list) and checklist:  # the checklist decides, not the claim
            done = all(isinstance(c, dict) and c.get("met") is True for c in checklist)
        done = done and _well_formed(data)  # imitatoes' own loop would refuse it and ask again
        reason = data.get("reason") if isinstance(data.get("reason"), str) else ""
        prompt_append = changes.get("prompt_append")
        neg_append = changes.get("neg_append")
        return (done, prompt_append if isinstance(prompt_append, str) else "",
                neg_append if isinstance(neg_append, str) else "", reason)
    if text.startswith(("{", "[", "```")):
        return False, "", "", "could not read the critique as JSON; nothing changed"
    first = text.splitlines()[0].strip()
    if _norm(first) in DONE_WORDS:
        return True, "", "", first
    return False, first[:200], "", first  # plain text: a suggestion for the prompt


def _well_formed(data):
    """The verdict schema's rules (schemas/verdict.schema.json in imitatoes), without jsonschema:
    ComfyUI's Python may not have it."""
    changes = data.get("changes", {} if data.get("done") is True else None)
    checklist = data.get("checklist", [])
    number = (int, float)
    return (isinstance(data.get("done"), bool) and isinstance(data.get("reason"), str)
            and isinstance(changes, dict)
            and isinstance(changes.get("prompt_append", ""), str)
            and isinstance(changes.get("neg_append", ""), str)
            and _is(changes.get("cfg"), number) and _is(changes.get("steps"), (int,))
            and (changes.get("seed", "keep") in ("keep", "new")
                 or (_is(changes.get("seed"), (int,)) and changes["seed"] >= 0))
            and isinstance(checklist, list)
            and all(isinstance(c, dict) and isinstance(c.get("requirement"), str)
                    and isinstance(c.get("met"), bool) for c in checklist))


def _is(value, types):
    """None, or a JSON number of the given kind (bool is not a number here)."""
    return value is None or (isinstance(value, types) and not isinstance(value, bool))


def _json_object(text):
    for candidate in [m.group(1) for m in FENCE.finditer(text)] + [text]:
        try:
            return json.loads(candidate)
        except ValueError:
            pass
    decoder = json.JSONDecoder()
    for match in re.finditer(r"\{", text):
        try:
            obj, _ = decoder.raw_decode(text, match.start())
        except ValueError:
            continue
        if isinstance(obj, dict):
            return obj
    return None


class ImitatoesSelfImprovingPrompt:
    """Prompt + critique in, improved prompt and whether to go on out."""

    CATEGORY = "Imitatoes"
    FUNCTION = "improve"
    DESCRIPTION = ("Folds a vision critic's verdict (JSON as imitatoes defines it, or plain "
                   "text) into the prompt: new terms appended once, the prompt capped, and "
                   "should_continue false once the critic says done or the maximum is reached.")
    RETURN_TYPES = ("STRING", "STRING", "BOOLEAN", "INT", "STRING")
    RETURN_NAMES = ("prompt_out", "negative_out", "should_continue", "next_iteration", "reason")
    OUTPUT_TOOLTIPS = ("The prompt with the critique's addition, each term once.",
                       "The negative prompt with the critique's addition, each term once.",
                       "False once the critique says done or next_iteration reaches the maximum.",
                       "iteration + 1: wire it back into iteration for the next pass.",
                       "The critic's reason, for a preview node.")

    @classmethod
    def INPUT_TYPES(cls):  # noqa: N802 (ComfyUI's name)
        return {
            "required": {
                "prompt": ("STRING", {"multiline": True, "default": "",
                                      "tooltip": "The prompt of the image that was judged."}),
                "critique": ("STRING", {"multiline": True, "default": "",
                                        "tooltip": "The critic's answer: a JSON verdict "
                                                   "{done, changes{prompt_append, neg_append}, "
                                                   "reason} or plain text."}),
                "iteration": ("INT", {"default": 0, "min": 0, "max": 100000,
                                      "tooltip": "This pass's number, starting at 0."}),
                "max_iterations": ("INT", {"default": 5, "min": 1, "max": 100000,
                                           "tooltip": "Stop after this many passes."}),
            },
            "optional": {
                "negative": ("STRING", {"multiline": True, "default": "",
                                        "tooltip": "The negative prompt of the judged image."}),
                "max_chars": ("INT", {"default": 800, "min": 10, "max": 100000,
                                      "tooltip": "The prompt never grows past this."}),
                "max_negative_terms": ("INT", {"default": 24, "min": 1, "max": 1000,
                                               "tooltip": "The negative prompt's term limit."}),
            },
        }

    @classmethod
    def IS_CHANGED(cls, **kwargs):  # noqa: N802 (ComfyUI's name)
        return float("nan")  # NaN never equals itself: run on every pass, never from cache

    def improve(self, prompt, critique, iteration, max_iterations, negative="", max_chars=800,
                max_negative_terms=24):
        done, prompt_append, neg_append, reason = read_verdict(critique)
        prompt_out = prompt if done else append_terms(prompt, prompt_append, max_chars)
        negative_out = negative if done else append_terms(negative, neg_append,
                                                          max_terms=max_negative_terms)
        next_iteration = int(iteration) + 1
        should_continue = not done and next_iteration < int(max_iterations)
        return (prompt_out, negative_out, should_continue, next_iteration, reason)


NODE_CLASS_MAPPINGS = {"ImitatoesSelfImprovingPrompt": ImitatoesSelfImprovingPrompt}
NODE_DISPLAY_NAME_MAPPINGS = {"ImitatoesSelfImprovingPrompt": "Imitatoes Self-Improving Prompt"}


# The sidebar's routes, on ComfyUI's own server; outside ComfyUI (tests, the stand-in) there
# is no server (nor `folder_paths`) to add them to.
with contextlib.suppress(ImportError):
    from .sidebar import install as _install_sidebar

    _install_sidebar()
