"""The mutation score of the science core from mutmut's results (mutants/linpath/*.meta).

Usage: python score.py PATTERN... (the mutant-name globs run.sh passes to `mutmut run`).
Prints killed / total per module and overall, then every mutant not killed, with the reason from
equivalent.txt where it is a known equivalent mutant. Exits 1 below MIN_SCORE."""

from __future__ import annotations

import fnmatch
import json
import sys
from collections import Counter, defaultdict
from pathlib import Path

from mutmut.stats import status_by_exit_code

MIN_SCORE = 0.90
DETECTED = {"killed", "timeout", "caught by type check"}
HERE = Path(__file__).resolve().parent


def equivalents() -> dict[str, str]:
    """equivalent.txt: `<mutant name> <why it cannot change behaviour>` per line; # starts a comment."""
    out = {}
    for line in (HERE / "equivalent.txt").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, _, why = line.partition(" ")
            out[name] = why.strip()
    return out


def results(patterns: list[str]) -> dict[str, str]:
    status = {}
    for meta in sorted((HERE / "mutants" / "linpath").rglob("*.py.meta")):  # one per module, in its package
        for name, code in json.loads(meta.read_text())["exit_code_by_key"].items():
            if any(fnmatch.fnmatch(name, p) for p in patterns):
                status[name] = status_by_exit_code[code]
    return status


def main(patterns: list[str]) -> int:
    status = results(patterns)
    unchecked = sorted(n for n, s in status.items() if s == "not checked")
    status = {n: s for n, s in status.items() if s != "not checked"}
    if not status:
        print("no mutmut results: run `bash mutation/run.sh` first")
        return 1
    if unchecked:  # an interrupted run: the score below covers the checked mutants only
        print(f"PARTIAL: {len(unchecked)} mutants not checked yet (run `bash mutation/run.sh` again to finish)")
    known = equivalents()
    per_module: dict[str, Counter] = defaultdict(Counter)
    for name, s in status.items():
        per_module[name.split(".x")[0]]["detected" if s in DETECTED else s] += 1
    for module, counts in sorted(per_module.items()):
        total = sum(counts.values())
        print(f"{module:18s} {counts['detected']:5d} / {total:5d} killed  {dict(counts)}")
    missed = sorted(n for n, s in status.items() if s not in DETECTED)
    killed = len(status) - len(missed)
    for name in missed:
        print(f"  {status[name]:10s} {name}" + (f"  [equivalent: {known[name]}]" if name in known else ""))
    unexplained = [n for n in missed if n not in known]
    stale = sorted(n for n in known if any(fnmatch.fnmatch(n, p) for p in patterns)  # this run's part only
                   and status.get(n, "killed") in DETECTED)
    if stale:
        print(f"equivalent.txt names {len(stale)} mutants that are killed or gone (renumbered?): {', '.join(stale)}")
    score = killed / len(status)
    print(f"score: {killed} / {len(status)} = {100 * score:.1f}% killed; "
          f"{len(missed) - len(unexplained)} of the {len(missed)} not killed are listed as equivalent")
    return 0 if score >= MIN_SCORE and not unchecked else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
