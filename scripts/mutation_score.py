"""The score of each mutated module, from `mutmut results --all true` (run by mutation.sh).
Equivalent mutants (listed in docs/mutation.md) are left out of the score."""

from __future__ import annotations

import collections
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EQUIVALENT = ROOT / "docs" / "mutation.md"


def equivalent() -> set[str]:
    """Mutant names listed as equivalent: lines that start with "- `imitatoes."."""
    if not EQUIVALENT.is_file():
        return set()
    return {line.split("`")[1] for line in EQUIVALENT.read_text().splitlines()
            if line.startswith("- `imitatoes.")}


def main() -> int:
    out = subprocess.run([str(ROOT / ".venv/bin/mutmut"), "results", "--all", "true"],
                         capture_output=True, text=True, cwd=ROOT, check=True).stdout
    skip = equivalent()
    counts: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for line in out.splitlines():
        name, _, status = line.strip().rpartition(": ")
        if not name or name in skip:
            continue
        counts[name.split(".x")[0]][status] += 1
    low = False
    print(f"{'module':<32}{'mutants':>8}{'caught':>8}{'score':>7}")
    for module, c in sorted(counts.items()):
        judged = sum(c.values()) - c["no tests"]
        caught = c["killed"] + c["timeout"]  # a mutant that makes a test hang is caught too
        score = caught / judged if judged else 0.0
        low |= score < 0.9
        print(f"{module:<32}{judged:>8}{caught:>8}{score:>7.0%}")
    print(f"({len(skip)} equivalent mutants left out; survivors: .venv/bin/mutmut results)")
    return 1 if low else 0


if __name__ == "__main__":
    sys.exit(main())
