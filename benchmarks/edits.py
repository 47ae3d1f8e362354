"""What edits that take away are worth: 20 goal specs whose start prompt names a background of
the wrong colour (the stand-in draws the first-named background, so adding the right one
changes nothing while the wrong one is there), half of them with so little room in the
prompt (`bounds.prompt.max_chars` 48) that the fix does not fit without a rewrite. Each runs
with search auto against a critic that only adds words (as before prompt_remove,
prompt_weight and prompt_rewrite), one that uses the edits, and one that takes out the wrong
term in a share of its removals. The critic misjudges as in benchmarks/search.py; the final
image is judged by the stand-in's eye without noise.

    .venv/bin/python benchmarks/edits.py [specs] [false_met] [missed] [wrong_edit]
"""

from __future__ import annotations

import random
import statistics
import sys
import tempfile
from pathlib import Path

import yaml

from imitatoes.commands.lifecycle import Run
from imitatoes.spec import load as specs
from imitatoes.standins.comfyui import ComfyStandin
from imitatoes.standins.ollama import Behaviour, OllamaStandin

sys.path.insert(0, str(Path(__file__).resolve().parent))
import search  # noqa: E402  (benchmarks/search.py: the goal specs and the truth)


def wrong_word_specs(folder: Path, n: int) -> list[Path]:
    paths = []
    for i, path in enumerate(search.goal_specs(folder, n)):
        data = yaml.safe_load(path.read_text())
        background = data["requirements"][1].rsplit(" ", 1)[1]
        wrong = next(c for c in search.BACKGROUNDS if c != background)
        shape = data["start"]["prompt"].split(",")[0]
        data["start"]["prompt"] = f"{shape}, {wrong} background, simple poster"
        if i % 2:
            data["bounds"] = {**data.get("bounds", {}), "prompt": {"max_chars": 48}}
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        paths.append(path)
    return paths


def main(n: int, false_met: float, missed: float, wrong_edit: float) -> None:
    modes = {"auto, adds only": (False, 0.0), "auto, edits": (True, 0.0),
             f"auto, edits, {wrong_edit:.0%} wrong": (True, wrong_edit)}
    results: dict[str, list[tuple[bool, bool, int]]] = {m: [] for m in modes}
    with tempfile.TemporaryDirectory() as tmp, ComfyStandin() as comfy, \
            OllamaStandin(Behaviour(false_met=false_met, missed=missed)) as ollama:
        env = {"IMITATOES_COMFY_URL": comfy.url, "IMITATOES_OLLAMA_URL": ollama.url}
        for i, path in enumerate(wrong_word_specs(Path(tmp), n)):
            for mode, (edits, wrong) in modes.items():
                spec = specs.load(path, ["search.verify_done=true", "memory=false"], env=env)
                ollama.rng = random.Random(i)
                ollama.behaviour.edits, ollama.behaviour.wrong_edit = edits, wrong
                run = Run.begin(spec, Path(tmp) / "runs")
                run.seed = i
                outcome = run.execute()
                true = search.truly_done(spec, outcome.run_dir)
                results[mode].append((outcome.state.status == "done", true,
                                      outcome.state.renders))
    print(f"{n} goal specs starting with a wrong background word (half with max_chars 48); "
          f"critic false_met {false_met:g}, missed {missed:g}")
    print(f"{'mode':<24}{'really done':>12}{'false done':>12}{'renders':>9}")
    for mode, runs in results.items():
        true = sum(t for _, t, _ in runs)
        false = sum(c and not t for c, t, _ in runs)
        print(f"{mode:<24}{true:>9}/{len(runs):<2}{false:>10}   "
              f"{statistics.mean(r for _, _, r in runs):>7.1f}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 20,
         float(sys.argv[2]) if len(sys.argv) > 2 else 0.1,
         float(sys.argv[3]) if len(sys.argv) > 3 else 0.05,
         float(sys.argv[4]) if len(sys.argv) > 4 else 0.2)
