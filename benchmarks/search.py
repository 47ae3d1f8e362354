"""How often a run ends with an image that really meets its requirements, when the critic is
as imperfect as real vision models are: the Ollama stand-in calls an unmet requirement met
with chance `false_met` and a met one unmet with chance `missed` (seeded), so it claims done
too early, and in a head-to-head it prefers the first image shown with chance `first_bias`
(0.2, and 0.4 in a second head-to-head row). Each goal spec runs in each mode: one image an
iteration with verify_done off and on, with head-to-head too, three candidates an iteration,
three proposals; the final image is then judged by the stand-in's eye without noise, which is
the truth here. For the head-to-head rows: how many contests, how many replaced the best with
an image that truly meets fewer requirements (wrong replacements), and how many compare
questions were asked.

    .venv/bin/python benchmarks/search.py [specs] [false_met] [missed] [stubborn] [only] [reps]

`stubborn`: the share of seeds for which the ComfyUI stand-in draws the shape in the wrong
colour whatever the prompt says, so that only another seed helps. `only`: the modes whose
names start with it (e.g. auto). `reps`: each spec that many times with other luck (the
critic's misjudgements, the engine's new seeds): which seeds a spread draws moves a mean of
20 runs by about 0.3 renders.
"""

from __future__ import annotations

import io
import itertools
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import yaml

from imitatoes.commands.lifecycle import Run
from imitatoes.loop import prompts as critic_prompt
from imitatoes.spec import load as specs
from imitatoes.standins import eye
from imitatoes.standins.comfyui import Behaviour as ComfyBehaviour
from imitatoes.standins.comfyui import ComfyStandin
from imitatoes.standins.ollama import Behaviour, OllamaStandin

ROOT = Path(__file__).resolve().parent.parent
COLOURS = ["red", "green", "yellow", "purple", "orange"]
SHAPES = ["circle", "square", "triangle"]
BACKGROUNDS = ["blue", "white", "black", "pink"]


def goal_specs(folder: Path, n: int) -> list[Path]:
    """n goal specs: a coloured shape on a coloured background, clean, without a watermark."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "demo_workflow.json").write_bytes(
        (ROOT / "imitatoes" / "data" / "demo_workflow.json").read_bytes())
    base = yaml.safe_load((ROOT / "imitatoes" / "data" / "demo.yaml").read_text())
    combos = [(c, s, b) for c, s, b in itertools.product(COLOURS, SHAPES, BACKGROUNDS) if c != b]
    random.Random(0).shuffle(combos)
    paths = []
    for i, (colour, shape, background) in enumerate(combos[:n]):
        data = {**base, "name": f"goal-{i:02d}", "goal": f"A {colour} {shape} on {background}.",
                "requirements": [f"A {colour} {shape}", f"The background is {background}",
                                 "No watermark or text", "Sharp and clean, no noise"],
                "start": {**base["start"], "prompt": f"a {shape}, simple poster",
                          "seed": 1000 + i},  # some seeds are stubborn (see main)
                "limits": {"iterations_per_loop": 4, "max_loops": 3}}
        path = folder / f"goal-{i:02d}.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        paths.append(path)
    return paths


def truly_done(spec: specs.Spec, run_dir: Path) -> bool:
    final = run_dir / "final.png"
    if not final.is_file():
        return False
    question = critic_prompt.critic_prompt(spec, spec.start, 1, 1)
    return bool(eye.judge(final.read_bytes(), question)["done"])


def met(image: bytes, question: str) -> int:
    return sum(i["met"] for i in eye.judge(image, question)["checklist"])


def contests(spec: specs.Spec, run_dir: Path) -> tuple[int, int, int]:
    """Head-to-head contests of a run, how many replaced the best with an image that truly
    meets fewer requirements, and the compare questions asked (records before both orders
    name one `winner`, newer ones an `outcome` and what was `asked`)."""
    question = critic_prompt.critic_prompt(spec, spec.start, 1, 1)
    held = wrong = asked = 0
    for path in sorted(run_dir.glob("loop_*_iter_??.json")):
        record = yaml.safe_load(path.read_text())
        h2h = record.get("head_to_head")
        if not h2h:
            continue
        held += 1
        asked += len(h2h.get("asked", [h2h]))
        won = h2h.get("outcome") == "won" if "outcome" in h2h else \
            h2h.get("winner") == record["key"]
        new, old = (run_dir / f"{record['key']}.png", run_dir / f"{h2h['against']}.png")
        if won and new.is_file() and old.is_file() and \
                met(new.read_bytes(), question) < met(old.read_bytes(), question):
            wrong += 1
    return held, wrong, asked


def repeats(run_dir: Path) -> int:
    """Renders (candidates included) made with the settings of an earlier one (read from the
    records alone, so it measures older versions too)."""
    made = []
    for path in run_dir.glob("loop_*_iter_*.json"):
        record = json.loads(path.read_text())
        refine = {k: v for k, v in (record.get("refine") or {}).items()
                  if k in ("from", "denoise", "region")}
        made.append(json.dumps([record["params"], refine], sort_keys=True))
    return len(made) - len(set(made))


def main(n: int, false_met: float, missed: float, stubborn: float, only: str = "",
         reps: int = 1) -> None:
    fixed = "search.strategy=fixed"
    h2h = [fixed, "search.verify_done=true", "search.head_to_head=true"]
    auto = ["search.verify_done=true", "search.strategy=auto"]
    modes = {"K=1": ([fixed, "search.verify_done=false"], 0.2),
             "K=1, verify": ([fixed, "search.verify_done=true"], 0.2),
             "K=1, verify, h2h": (h2h, 0.2), "K=1, verify, h2h .4": (h2h, 0.4),
             "K=3, verify": (["search.verify_done=true", "search.candidates=3"], 0.2),
             "3 proposals, verify": (["search.verify_done=true", "search.proposals=3"], 0.2),
             # memory across runs: a first pass with an empty store of its own, a second pass
             # of the same spec with what the first learned, and a run that learns only from
             # the first passes of the specs before it (what a user's memory holds over time)
             "auto, verify": ([*auto, "memory={store}"], 0.2),
             "auto, 2nd pass memory": ([*auto, "memory={store}"], 0.2),
             "auto, others' memory": ([*auto, "memory={others}"], 0.2)}
    modes = {m: v for m, v in modes.items() if not only or m.startswith(only)}
    results: dict[str, list[dict]] = {mode: [] for mode in modes}
    with tempfile.TemporaryDirectory() as tmp, ComfyStandin(ComfyBehaviour(stubborn=stubborn)) \
            as comfy, \
            OllamaStandin(Behaviour(false_met=false_met, missed=missed)) as ollama:
        env = {"IMITATOES_COMFY_URL": comfy.url, "IMITATOES_OLLAMA_URL": ollama.url}
        runs = [(i, path, r) for r in range(reps)
                for i, path in enumerate(goal_specs(Path(tmp) / f"rep{r}", n))]
        for i, path, r in runs:
            luck = i + 1000 * r  # the critic's misjudgements and the engine's new seeds
            stores = {"store": f"{tmp}/{r}-{i}.jsonl", "others": f"{tmp}/{r}-others-{i}.jsonl"}
            for mode, (overrides, bias) in modes.items():
                if not any(o.startswith("memory=") for o in overrides):
                    overrides = [*overrides, "memory=false"]
                spec = specs.load(path, [o.format(**stores) for o in overrides], env=env)
                ollama.rng = random.Random(luck)  # the same luck for every mode
                ollama.behaviour.first_bias = bias
                started = time.perf_counter()
                run = Run.begin(spec, Path(tmp) / "runs")
                run.seed = luck  # the same candidate seeds every time the benchmark runs
                outcome = run.execute()
                held, wrong, asked = contests(spec, outcome.run_dir)
                results[mode].append({
                    "claimed": outcome.state.status == "done",
                    "true": truly_done(spec, outcome.run_dir),
                    "renders": outcome.state.renders,
                    "seconds": time.perf_counter() - started,
                    "contests": held, "wrong": wrong, "compares": asked,
                    "repeats": repeats(outcome.run_dir)})
            # the next spec's "others' memory": every run of the specs before it
            Path(f"{tmp}/{r}-others-{i + 1}.jsonl").write_text("".join(
                Path(f).read_text() for f in stores.values() if Path(f).is_file()))
    out = io.StringIO()
    out.write(f"{n} goal specs{f' x {reps} draws of luck' if reps > 1 else ''}, critic "
              f"false_met {false_met:g}, missed {missed:g}; "
              f"{stubborn:.0%} of seeds draw the shape in the wrong colour\n")
    out.write(f"{'mode':<21}{'really done':>12}{'false done':>12}{'renders':>9}"
              f"{'repeated':>9}{'wall s':>8}{'h2h: contests':>15}{'wrong':>7}{'asked':>7}\n")
    for mode, runs in results.items():
        true = sum(r["true"] for r in runs)
        false = sum(r["claimed"] and not r["true"] for r in runs)
        held = sum(r["contests"] for r in runs)
        h2h_cells = f"{held:>15}{sum(r['wrong'] for r in runs):>7}" \
            f"{sum(r['compares'] for r in runs):>7}" if held else ""
        out.write(f"{mode:<21}{true:>9}/{len(runs):<2}{false:>10}   "
                  f"{statistics.mean(r['renders'] for r in runs):>7.1f}"
                  f"{sum(r['repeats'] for r in runs):>9}"
                  f"{sum(r['seconds'] for r in runs):>8.1f}{h2h_cells}\n")
    print(out.getvalue(), end="")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 20,
         float(sys.argv[2]) if len(sys.argv) > 2 else 0.25,
         float(sys.argv[3]) if len(sys.argv) > 3 else 0.1,
         float(sys.argv[4]) if len(sys.argv) > 4 else 0.0,
         sys.argv[5] if len(sys.argv) > 5 else "",
         int(sys.argv[6]) if len(sys.argv) > 6 else 1)
