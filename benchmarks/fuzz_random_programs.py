"""Fuzz the compiler with random well-typed RASP programs (the generator of tests/strategies.py).

    python benchmarks/fuzz_random_programs.py --programs 500 --seed 0 --max-depth 6

Every program either compiles, and then the ONNX model must equal `rasp.evaluate` on random
inputs, or is refused with a CompileError (counted by class and normalised reason). Anything
else is a compiler bug: a crash (any other exception) or a mismatch. Each bug is shrunk to the
smallest sub-program (and, for a mismatch, the shortest input) that still shows it, and printed
as an executable reproducer. Known bugs (tests/strategies.py KNOWN_BUGS) are labelled as such.
The summary goes to benchmarks/results/fuzz.md (and stdout).
"""

from __future__ import annotations

import argparse
import collections
import platform
import random
import sys
import time
from pathlib import Path
from typing import Any, Optional

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from strategies import (  # noqa: E402
    ALL_FEATURES,
    KNOWN_BUGS,
    REGRESSIONS,
    GeneratedProgram,
    Outcome,
    check_program,
    crash_signature,
    features,
    generate_program,
    known_bug,
    random_inputs,
)


def _seed_rng(seed: int, i: int, what: str) -> random.Random:
    return random.Random(f"{seed}:{i}:{what}")


def failure_key(gp: GeneratedProgram, outcome: Outcome) -> Optional[str]:
    if outcome.status not in ("crashed", "mismatch"):
        return None
    bug = known_bug(gp, outcome)
    if bug is not None:
        return f"known bug {bug.id} ({outcome.status})"
    if outcome.status == "crashed":
        return "crash: " + crash_signature(outcome.error)  # type: ignore[arg-type]
    return "mismatch"


def shrink(gp: GeneratedProgram, outcome: Outcome, inputs: list[list[Any]], rng: random.Random
           ) -> tuple[GeneratedProgram, Outcome]:
    """The smallest sub-program (an s-op the program is built from) failing the same way."""
    key = failure_key(gp, outcome)
    best, best_out = gp, outcome
    subs = [n for n in gp.reachable() if not gp.nodes[n].is_selector and n != gp.root
            and gp.nodes[n].reads_tokens]
    subs.sort(key=lambda n: len(gp.reachable(n)))
    for name in subs:
        sub = gp.with_root(name)
        if sub.size >= best.size:
            break
        more = inputs + random_inputs(sub, rng, 40)
        out = check_program(sub, more)
        if failure_key(sub, out) == key:
            best, best_out = sub, out
            break  # subs are sorted by size: the first hit is the smallest
    if best_out.status == "mismatch":
        best_out = shrink_input(best, best_out)
    return best, best_out


def shrink_input(gp: GeneratedProgram, outcome: Outcome) -> Outcome:
    """Keeps the shortest mismatching input, then drops positions while it still mismatches."""
    m = min(outcome.mismatches, key=lambda m: len(m.input))
    xs = list(m.input)
    changed = True
    while changed and len(xs) > 1:
        changed = False
        for i in range(len(xs)):
            cand = xs[:i] + xs[i + 1:]
            out = check_program(gp, [cand])
            if out.status == "mismatch":
                xs, m, changed = cand, out.mismatches[0], True
                break
    return Outcome("mismatch", checked=1, mismatches=[m])


def culprit_pass(gp: GeneratedProgram) -> str:
    """The first pass after which the IR no longer computes the program (compile with verify=True)."""
    from raspc.model import compile_rasp_to_model

    try:
        compile_rasp_to_model(gp.program, gp.vocab, gp.max_seq_len, causal=gp.causal, verify=True)
    except Exception as err:  # noqa: BLE001 - VerificationError names the pass
        return f"{type(err).__name__}: {str(err).splitlines()[0][:300]}"
    return "per-pass verification found no difference (the ONNX export or the runtime differs)"


def run(args: argparse.Namespace) -> str:
    t0 = time.time()
    status = collections.Counter()
    refusals: collections.Counter = collections.Counter()
    failures: dict[str, list[tuple[int, GeneratedProgram, Outcome]]] = collections.defaultdict(list)
    coverage: collections.Counter = collections.Counter()
    compiled_coverage: collections.Counter = collections.Counter()
    depth_hist: collections.Counter = collections.Counter()
    checked = skipped = 0
    compiled_without_inputs = 0
    tried = 0
    for i in range(args.programs):
        if args.time_limit and time.time() - t0 > args.time_limit:
            break
        tried += 1
        gp = generate_program(_seed_rng(args.seed, i, "program"), max_depth=args.max_depth,
                              max_seq_len=args.max_seq_len)
        inputs = random_inputs(gp, _seed_rng(args.seed, i, "inputs"), args.inputs)
        outcome = check_program(gp, inputs)
        status[outcome.status] += 1
        feats = features(gp)
        coverage.update(feats)
        depth_hist[gp.depth] += 1
        checked += outcome.checked
        skipped += outcome.skipped
        if outcome.status in ("ok", "mismatch"):
            compiled_coverage.update(feats)
            if outcome.checked == 0:
                compiled_without_inputs += 1
        if outcome.status == "refused":
            refusals[(outcome.error_class, outcome.reason)] += 1
        key = failure_key(gp, outcome)
        if key is not None:
            failures[key].append((i, gp, outcome))
        if args.verbose and key is not None:
            print(f"[{i}] {key}", flush=True)
    elapsed = time.time() - t0

    # shrink one example of every distinct failure
    reports = []
    for key, cases in sorted(failures.items(), key=lambda kv: -len(kv[1])):
        i, gp, outcome = min(cases, key=lambda c: c[1].size)
        inputs = random_inputs(gp, _seed_rng(args.seed, i, "inputs"), args.inputs)
        small, small_out = shrink(gp, outcome, inputs, _seed_rng(args.seed, i, "shrink"))
        reports.append((key, len(cases), i, small, small_out))
    shrink_time = time.time() - t0 - elapsed

    compiled = status["ok"] + status["mismatch"]
    known_hits = sum(len(cases) for key, cases in failures.items() if key.startswith("known bug "))
    lines = [
        "# Random-program fuzz run",
        "",
        f"`python benchmarks/fuzz_random_programs.py --programs {args.programs} --seed {args.seed} "
        f"--max-depth {args.max_depth} --max-seq-len {args.max_seq_len} --inputs {args.inputs}`"
        + (f" (time limit {args.time_limit:g} s)" if args.time_limit else ""),
        "",
        f"Machine: {platform.machine()}, Python {platform.python_version()}. "
        f"Programs: tests/strategies.py (`generate_program`), 2-4 tokens, max_seq_len 2-{args.max_seq_len}, "
        "~15% compiled with causal=True. Numerical outputs are compared with rel/abs tolerance 1e-4.",
        "",
        "| | count |",
        "| --- | ---: |",
        f"| programs tried | {tried} |",
        f"| compiled | {compiled} |",
        f"| refused (CompileError) | {status['refused']} |",
        f"| crashed (any other exception: compiler bug) | {status['crashed']} |",
        f"| programs with a mismatch (compiler bug) | {status['mismatch']} |",
        f"| crashes + mismatches that are known bugs (KNOWN_BUGS) | {known_hits} |",
        f"| inputs checked against rasp.evaluate | {checked} |",
        f"| inputs skipped (evaluator raised, or a categorical mean of different values) | {skipped} |",
        f"| compiled programs with no checkable input | {compiled_without_inputs} |",
        f"| time (generate + compile + run) | {elapsed:.1f} s |",
        f"| time (shrinking failures) | {shrink_time:.1f} s |",
        "",
        "Depth of the programs: " + ", ".join(f"{d}: {n}" for d, n in sorted(depth_hist.items())),
        "",
        "## Refusals by class and normalised reason",
        "",
        "| count | class | reason |",
        "| ---: | --- | --- |",
    ]
    for (cls, reason), n in refusals.most_common():
        lines.append(f"| {n} | {cls} | {reason.replace('|', '/')} |")
    if not refusals:
        lines.append("| 0 | | |")
    lines += ["", "## Compiler bugs (crashes and mismatches)", ""]
    if not reports:
        lines.append("None found.")
    for key, n, i, small, out in reports:
        lines += [f"### {key} ({n} programs; first shrunk from program #{i})", ""]
        if out.status == "crashed":
            lines.append(f"Raises `{type(out.error).__name__}: {str(out.error).splitlines()[0][:300]}`")
        else:
            m = out.mismatches[0]
            lines += [f"Input `{m.input!r}`: expected `{m.expected!r}`, got `{m.got!r}`.", "",
                      f"Per-pass verification: {culprit_pass(small)}"]
        lines += ["", "```python", small.script(), "```", ""]
    lines += ["## Known bugs (tests/strategies.py KNOWN_BUGS) and their hits in this run", ""]
    for bug in KNOWN_BUGS:
        hits = sum(len(c) for k, c in failures.items() if k.startswith(f"known bug {bug.id} "))
        repro = bug.reproducer()
        lines += [f"- **{bug.id}** ({hits} programs here): {bug.summary}. Reproducer "
                  f"(vocab={repro.vocab!r}, max_seq_len={repro.max_seq_len}, causal={repro.causal}): "
                  f"`{repro.nodes[repro.root].code}`"]
    lines += ["", "Fixed since found (tests/strategies.py REGRESSIONS, each a test): "
              + ", ".join(name for name, _ in REGRESSIONS), ""]
    lines += ["## Coverage (programs containing each primitive: all generated / compiled)", "",
              "| primitive | generated | compiled |", "| --- | ---: | ---: |"]
    for f in sorted(ALL_FEATURES | set(coverage)):
        lines.append(f"| {f} | {coverage[f]} | {compiled_coverage[f]} |")
    missing = sorted(ALL_FEATURES - set(coverage))
    if missing:
        lines += ["", "Never generated in this run: " + ", ".join(missing)]
    return "\n".join(lines) + "\n"


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--programs", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-depth", type=int, default=6)
    ap.add_argument("--max-seq-len", type=int, default=6, help="max_seq_len is drawn from 2..this")
    ap.add_argument("--inputs", type=int, default=20, help="random inputs per program")
    ap.add_argument("--time-limit", type=float, default=0.0, help="stop generating after this many seconds")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "fuzz.md")
    ap.add_argument("--append", action="store_true", help="append the report to --out instead of replacing it")
    ap.add_argument("--title", default="", help="a heading for this run (e.g. when appending)")
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args(argv)
    report = run(args)
    if args.title:
        report = report.replace("# Random-program fuzz run", f"# Random-program fuzz run: {args.title}", 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if args.append and args.out.exists():
        report = args.out.read_text().rstrip("\n") + "\n\n---\n\n" + report
    args.out.write_text(report)
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
