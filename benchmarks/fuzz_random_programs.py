"""Fuzz the compiler with random well-typed RASP programs (raspc.random_programs, through tests/strategies.py).

    python benchmarks/fuzz_random_programs.py --programs 3000 --seed 0 --max-seq-len 4-24 --workers 2

Every program either compiles, and then the ONNX model must equal `rasp.evaluate` on random
inputs, or is refused with a CompileError (counted by class and normalised reason). Anything
else is a compiler bug: a crash (any other exception) or a mismatch. Each program runs (generate,
compile, check) in a worker process under `--time-limit` seconds; one that takes longer is
killed (its worker replaced) and counted as a timeout. Each bug is shrunk (to the smallest
sub-program, then the smallest max_seq_len and vocabulary, then the shortest input, that still
show it) and printed as an executable reproducer. Known bugs (tests/strategies.py KNOWN_BUGS)
are labelled as such.

Program i of a run depends only on (--seed, i, --max-depth, --max-seq-len, --inputs): the same
command gives the same programs and the same outcome table (timeouts aside, which depend on the
machine). The summary goes to --out (markdown) and --json, and stdout.
"""

from __future__ import annotations

import argparse
import ast
import collections
import json
import multiprocessing as mp
import os
import platform
import random
import re
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
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

TIMEOUT = "timeout"


@dataclass(frozen=True)
class Config:
    seed: int
    max_depth: int
    seq_len: tuple[int, int]
    inputs: int
    reuse_residual: bool = False  # compile with reuse_residual=True (`--reuse-residual`)


# compile_rasp_to_model options of this run: set from the Config in each worker
COMPILE_KW: dict[str, Any] = {}


def _seed_rng(seed: int, i: int, what: str) -> random.Random:
    return random.Random(f"{seed}:{i}:{what}")


def make_program(cfg: Config, i: int) -> GeneratedProgram:
    return generate_program(_seed_rng(cfg.seed, i, "program"), max_depth=cfg.max_depth, max_seq_len=cfg.seq_len)


def make_inputs(cfg: Config, i: int, gp: GeneratedProgram) -> list[list[Any]]:
    return random_inputs(gp, _seed_rng(cfg.seed, i, "inputs"), cfg.inputs)


def failure_key(gp: GeneratedProgram, outcome: Outcome) -> Optional[str]:
    if outcome.status not in ("crashed", "mismatch"):
        return None
    bug = known_bug(gp, outcome)
    if bug is not None:
        return f"known bug {bug.id} ({outcome.status})"
    if outcome.status == "crashed":
        return "crash: " + crash_signature(outcome.error)  # type: ignore[arg-type]
    return "mismatch"


# --------------------------------------------------------------------------- shrinking


def _fails_alike(gp: GeneratedProgram, inputs: list[list[Any]], key: str) -> Optional[Outcome]:
    out = check_program(gp, inputs, **COMPILE_KW)
    return out if failure_key(gp, out) == key else None


def _inputs_for(gp: GeneratedProgram, inputs: list[list[Any]], rng: random.Random, n: int = 40) -> list[list[Any]]:
    vocab = list(gp.vocab)
    kept = [xs for xs in inputs if len(xs) <= gp.max_seq_len and all(x in vocab for x in xs)]
    return kept + random_inputs(gp, rng, n)


def _with(gp: GeneratedProgram, *, max_seq_len: Optional[int] = None, vocab: Optional[list] = None) -> GeneratedProgram:
    return GeneratedProgram(gp.program, list(gp.vocab if vocab is None else vocab),
                            gp.max_seq_len if max_seq_len is None else max_seq_len, gp.causal, gp.root, gp.nodes,
                            gp.constant_lengths)


def _program_lines(gp: GeneratedProgram) -> tuple[list[tuple[str, str]], str]:
    """The program as (name, code) assignments, dependencies first, and the root's name."""
    order = [n for n in gp.reachable() if not n.startswith("rasp.")]
    return [(n, gp.nodes[n].code) for n in order], gp.root


def _rebuild(gp: GeneratedProgram, assigns: list[tuple[str, str]], root: str) -> Optional[GeneratedProgram]:
    text = "\n".join([*(f"{n} = {c}" for n, c in assigns), f"program = {root}"])
    try:
        return GeneratedProgram.from_source(text, gp.vocab, gp.max_seq_len, gp.causal)
    except Exception:  # noqa: BLE001 - an edit that does not build a program
        return None


def _substitute(assigns: list[tuple[str, str]], root: str, name: str, repl: str
                ) -> tuple[list[tuple[str, str]], str]:
    """Drops `name`'s line and writes `repl` wherever it was used."""
    pat = re.compile(rf"\b{re.escape(name)}\b")
    out = [(n, pat.sub(repl, c)) for n, c in assigns if n != name]
    return out, (repl if root == name else root)


_LEAVES = {"categorical": ("rasp.tokens", "rasp.indices"), "numerical": ("rasp.numerical(rasp.indices)",)}
_TABLE_CALLS = {"Table", "Table2", "Partial", "Pred"}


def _smaller_tables(code: str) -> list[str]:
    """`code` with entries removed from one Table/Table2/Partial mapping or Pred pair list (half of
    them, then one at a time), and a Table's default set to None."""
    try:
        tree = ast.parse(code, mode="eval")
    except SyntaxError:
        return []
    out: list[str] = []
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)
             and n.func.id in _TABLE_CALLS and n.args and isinstance(n.args[0], (ast.Dict, ast.List))]
    for call in calls:
        coll = call.args[0]
        items = list(range(len(coll.keys if isinstance(coll, ast.Dict) else coll.elts)))
        drops = [items[: len(items) // 2], items[len(items) // 2:]] if len(items) > 3 else []
        drops += [[i] for i in items]
        for drop in drops:
            if not drop:
                continue
            saved = (list(coll.keys), list(coll.values)) if isinstance(coll, ast.Dict) else list(coll.elts)
            if isinstance(coll, ast.Dict):
                coll.keys = [k for j, k in enumerate(saved[0]) if j not in drop]
                coll.values = [v for j, v in enumerate(saved[1]) if j not in drop]
            else:
                coll.elts = [e for j, e in enumerate(saved) if j not in drop]
            out.append(ast.unparse(tree))
            if isinstance(coll, ast.Dict):
                coll.keys, coll.values = saved
            else:
                coll.elts = saved
    return out


def _candidates(gp: GeneratedProgram):
    """Smaller variants of the program, bigger cuts first: an s-op or selector replaced by one of its
    operands or by a leaf, then smaller tables."""
    assigns, root = _program_lines(gp)
    names = [n for n, _ in assigns]
    code_of = dict(assigns)
    for name in reversed(names):
        node = gp.nodes.get(name)
        kids = [k for k in re.findall(r"\b[a-z]+\d+\b", code_of[name]) if k in code_of]
        repl: list[str] = []
        if node is not None and node.is_selector:
            repl = [k for k in kids if gp.nodes[k].is_selector]
        elif node is not None:
            repl = [k for k in kids if not gp.nodes[k].is_selector and gp.nodes[k].enc == node.enc]
            repl += list(_LEAVES["numerical" if node.enc == "numerical" else "categorical"])
        for r in dict.fromkeys(repl):
            yield _rebuild(gp, *_substitute(assigns, root, name, r))
    for idx, (name, code) in enumerate(assigns):
        for smaller in _smaller_tables(code):
            yield _rebuild(gp, assigns[:idx] + [(name, smaller)] + assigns[idx + 1:], root)


def shrink(gp: GeneratedProgram, outcome: Outcome, inputs: list[list[Any]], rng: random.Random,
           max_checks: int = 600) -> tuple[GeneratedProgram, Outcome]:
    """A smaller program failing the same way (greedy edits of its source: an s-op replaced by an
    operand or a leaf, table entries dropped), then the smallest max_seq_len and vocabulary, and for
    a mismatch the shortest input."""
    key = failure_key(gp, outcome)
    assert key is not None
    best, best_out = gp, outcome
    rebuilt = GeneratedProgram.from_source(gp.source(), gp.vocab, gp.max_seq_len, gp.causal)  # names as printed
    out = _fails_alike(rebuilt, inputs, key)
    if out is not None:
        best, best_out = rebuilt, out
    if outcome.status == "mismatch":
        inputs = [m.input for m in outcome.mismatches] + inputs
    checks = 0
    improved = True
    while improved and checks < max_checks:
        improved = False
        for cand in _candidates(best):
            if cand is None or cand.program is None:
                continue
            checks += 1
            out = _fails_alike(cand, _inputs_for(cand, inputs, rng), key)
            if out is not None:
                best, best_out, improved = cand, out, True
                if out.status == "mismatch":
                    inputs = [m.input for m in out.mismatches] + inputs
                break
            if checks >= max_checks:
                break
    # the smallest max_seq_len (not below a ConstantSOp's length)
    for n in range(max([1, *best.constant_lengths]), best.max_seq_len):
        cand = _with(best, max_seq_len=n)
        out = _fails_alike(cand, _inputs_for(cand, inputs, rng), key)
        if out is not None:
            best, best_out = cand, out
            break
    # drop tokens from the vocabulary while it still fails
    changed = True
    while changed and len(best.vocab) > 1:
        changed = False
        for tok in list(best.vocab):
            cand = _with(best, vocab=[t for t in best.vocab if t is not tok])
            out = _fails_alike(cand, _inputs_for(cand, inputs, rng), key)
            if out is not None:
                best, best_out, changed = cand, out, True
                break
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
            out = check_program(gp, [cand], **COMPILE_KW)
            if out.status == "mismatch":
                xs, m, changed = cand, out.mismatches[0], True
                break
    return Outcome("mismatch", checked=1, mismatches=[m])


def culprit_pass(gp: GeneratedProgram) -> str:
    """The first pass after which the IR no longer computes the program (compile with verify=True)."""
    from raspc.model import compile_rasp_to_model

    try:
        compile_rasp_to_model(gp.program, gp.vocab, gp.max_seq_len, causal=gp.causal, verify=True, **COMPILE_KW)
    except Exception as err:  # noqa: BLE001 - VerificationError names the pass
        return f"{type(err).__name__}: {str(err).splitlines()[0][:300]}"
    return "per-pass verification found no difference (the ONNX export or the runtime differs)"


# --------------------------------------------------------------------------- work done in the workers


def run_program(cfg: Config, i: int) -> dict:
    """Generate, compile and check program i: a picklable summary."""
    t0 = time.perf_counter()
    gp = make_program(cfg, i)
    COMPILE_KW.update(reuse_residual=cfg.reuse_residual)
    outcome = check_program(gp, make_inputs(cfg, i, gp), **COMPILE_KW)
    res = {
        "i": i, "status": outcome.status, "error_class": outcome.error_class, "reason": outcome.reason,
        "checked": outcome.checked, "skipped": outcome.skipped, "features": sorted(features(gp)),
        "depth": gp.depth, "size": gp.size, "max_seq_len": gp.max_seq_len, "causal": gp.causal,
        "key": failure_key(gp, outcome),
    }
    if res["key"] is not None:
        res["detail"] = _detail(gp, outcome)
    res["seconds"] = time.perf_counter() - t0
    return res


def _detail(gp: GeneratedProgram, outcome: Outcome) -> str:
    lines = [gp.source()]
    if outcome.error is not None:
        lines.append(f"{type(outcome.error).__name__}: {outcome.error}")
        lines.append("".join(traceback.format_tb(outcome.error.__traceback__)[-4:]))
    for m in outcome.mismatches[:3]:
        lines.append(str(m))
    return "\n".join(lines)


def run_shrink(cfg: Config, i: int) -> dict:
    COMPILE_KW.update(reuse_residual=cfg.reuse_residual)
    gp = make_program(cfg, i)
    inputs = make_inputs(cfg, i, gp)
    outcome = check_program(gp, inputs, **COMPILE_KW)
    if failure_key(gp, outcome) is None:
        return {"i": i, "flaky": True, "status": outcome.status}
    small, out = shrink(gp, outcome, inputs, _seed_rng(cfg.seed, i, "shrink"))
    res: dict = {"i": i, "status": out.status, "source": small.source(), "script": small.script(),
                 "vocab": repr(small.vocab), "max_seq_len": small.max_seq_len, "causal": small.causal}
    if out.status == "crashed":
        err = out.error
        res["error"] = f"{type(err).__name__}: {str(err).splitlines()[0][:400] if str(err) else ''}"
        res["traceback"] = "".join(traceback.format_exception(type(err), err, err.__traceback__)[-6:])
    else:
        m = out.mismatches[0]
        res.update(input=repr(m.input), expected=repr(m.expected), got=repr(m.got), culprit=culprit_pass(small))
    return res


def _worker(conn: Connection, cfg: Config) -> None:
    import raspc.model  # noqa: F401 - import (xDSL, onnxruntime) before the first deadline starts

    conn.send("ready")
    while True:
        try:
            msg = conn.recv()
        except EOFError:
            return
        if msg is None:
            return
        kind, i = msg
        try:
            res = run_program(cfg, i) if kind == "program" else run_shrink(cfg, i)
        except BaseException as err:  # noqa: BLE001 - a harness failure is reported, never fatal
            res = {"i": i, "status": "crashed", "error_class": type(err).__name__, "reason": str(err)[:200],
                   "key": f"harness error: {type(err).__name__}: {str(err)[:200]}",
                   "detail": traceback.format_exc()}
        conn.send((kind, i, res))


# --------------------------------------------------------------------------- the pool


@dataclass
class _Slot:
    proc: Any
    conn: Connection
    task: Optional[tuple[str, int]] = None
    started: float = 0.0
    ready: bool = False


@dataclass
class Pool:
    """Worker processes, each running one task at a time under a deadline; a worker past it is
    killed and replaced, and the task reported as a timeout."""

    n: int
    cfg: Config
    slots: list[_Slot] = field(default_factory=list)
    restarts: int = 0

    def __post_init__(self) -> None:
        self.ctx = mp.get_context("spawn")
        self.slots = [self._start() for _ in range(self.n)]

    def _start(self) -> _Slot:
        parent, child = self.ctx.Pipe()
        proc = self.ctx.Process(target=_worker, args=(child, self.cfg), daemon=True)
        proc.start()
        child.close()
        return _Slot(proc, parent)

    def _replace(self, slot: _Slot) -> None:
        slot.proc.kill()
        slot.proc.join()
        slot.conn.close()
        fresh = self._start()
        slot.proc, slot.conn, slot.task, slot.ready = fresh.proc, fresh.conn, None, False
        self.restarts += 1

    def _await_ready(self) -> None:
        """Waits for workers that are still starting (imports do not count against a deadline)."""
        for s in self.slots:
            while not s.ready:
                try:
                    s.ready = s.conn.recv() == "ready"
                except (EOFError, OSError):  # died while starting: start another
                    self._replace(s)

    def run(self, tasks: list[tuple[str, int]], time_limit: float):
        """Yields (task, result) in completion order; result is TIMEOUT or the worker's dict."""
        pending = collections.deque(tasks)
        while pending or any(s.task is not None for s in self.slots):
            self._await_ready()
            for s in self.slots:
                if s.task is None and pending:
                    s.task, s.started = pending.popleft(), time.monotonic()
                    s.conn.send(s.task)
            busy = [s for s in self.slots if s.task is not None]
            now = time.monotonic()
            wait_for = None
            if time_limit:
                wait_for = max(0.0, min(s.started + time_limit for s in busy) - now)
            ready = wait([s.conn for s in busy], timeout=wait_for)
            for s in busy:
                if s.conn in ready:
                    task = s.task
                    try:
                        kind, i, res = s.conn.recv()
                    except (EOFError, OSError):  # the worker died (a segfault, the OOM killer)
                        code = s.proc.exitcode
                        self._replace(s)
                        yield task, {"i": task[1], "status": "crashed", "error_class": "WorkerDied",
                                     "reason": f"exit code {code}", "key": f"crash: worker died (exit code {code})"}
                        continue
                    s.task = None
                    yield task, res
                elif time_limit and time.monotonic() - s.started > time_limit:
                    task = s.task
                    self._replace(s)
                    yield task, TIMEOUT

    def close(self) -> None:
        for s in self.slots:
            try:
                s.conn.send(None)
            except OSError:
                pass
        for s in self.slots:
            s.proc.join(timeout=5)
            if s.proc.is_alive():
                s.proc.kill()
                s.proc.join()


# --------------------------------------------------------------------------- the run


def parse_seq_len(text: str) -> tuple[int, int]:
    lo, sep, hi = text.partition("-")
    if not sep:
        return 2, int(lo)
    lo_i, hi_i = int(lo), int(hi)
    if not 1 <= lo_i <= hi_i:
        raise argparse.ArgumentTypeError(f"bad --max-seq-len range {text!r}")
    return lo_i, hi_i


def _git_commit() -> str:
    try:
        import raspc

        where = Path(raspc.__file__).resolve().parent
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "raspc"], cwd=ROOT, capture_output=True, text=True)
        commit = out.stdout.strip() or "?"
        if where != (ROOT / "raspc").resolve():
            marker = where.parent / "COMMIT"  # a `git archive` snapshot may name its commit there
            snap = f" (a snapshot of commit {marker.read_text().strip()})" if marker.exists() else ""
            return f"raspc imported from {where}{snap}"
        return commit + (" with uncommitted changes under raspc/" if dirty.stdout.strip() else "")
    except Exception:  # noqa: BLE001
        return "?"


def run(args: argparse.Namespace) -> tuple[str, dict]:
    cfg = Config(args.seed, args.max_depth, args.max_seq_len, args.inputs, args.reuse_residual)
    indices = args.only if args.only else list(range(args.programs))
    t0 = time.time()
    results: dict[int, Any] = {}
    pool = Pool(args.workers, cfg)
    try:
        done = 0
        for (_, i), res in pool.run([("program", i) for i in indices], args.time_limit):
            results[i] = res
            done += 1
            if args.verbose and (res == TIMEOUT or res.get("key")):
                print(f"[{i}] {'timeout' if res == TIMEOUT else res['key']}", flush=True)
            if args.progress and done % args.progress == 0:
                print(f"{done}/{len(indices)} programs, {time.time() - t0:.0f} s", file=sys.stderr, flush=True)
        elapsed = time.time() - t0

        status: collections.Counter = collections.Counter()
        refusals: collections.Counter = collections.Counter()
        failures: dict[str, list[dict]] = collections.defaultdict(list)
        coverage: collections.Counter = collections.Counter()
        compiled_coverage: collections.Counter = collections.Counter()
        depth_hist: collections.Counter = collections.Counter()
        seq_len_hist: collections.Counter = collections.Counter()
        timeouts: list[int] = []
        checked = skipped = compiled_without_inputs = 0
        for i in indices:
            res = results[i]
            if res == TIMEOUT:
                status[TIMEOUT] += 1
                timeouts.append(i)
                continue
            status[res["status"]] += 1
            feats = res.get("features", [])
            coverage.update(feats)
            if "depth" in res:
                depth_hist[res["depth"]] += 1
                seq_len_hist[res["max_seq_len"]] += 1
            checked += res.get("checked", 0)
            skipped += res.get("skipped", 0)
            if res["status"] in ("ok", "mismatch"):
                compiled_coverage.update(feats)
                if res.get("checked", 0) == 0:
                    compiled_without_inputs += 1
            if res["status"] == "refused":
                refusals[(res["error_class"], res["reason"])] += 1
            if res.get("key"):
                failures[res["key"]].append(res)

        # shrink the smallest examples of every distinct failure, in the workers too
        shrink_tasks = []
        for key, cases in failures.items():
            for res in sorted(cases, key=lambda r: (r.get("size", 0), r["i"]))[:args.shrink_per_key]:
                shrink_tasks.append(("shrink", res["i"]))
        shrunk: dict[int, Any] = {}
        t1 = time.time()
        for (_, i), res in pool.run(shrink_tasks, args.time_limit * 20 if args.time_limit else 0):
            shrunk[i] = res
        shrink_time = time.time() - t1
        # timeouts: the programs, to look at (generated here: generation is fast and never hangs)
        timeout_sources = {i: make_program(cfg, i).source() for i in timeouts[:5]}
        restarts = pool.restarts
    finally:
        pool.close()

    compiled = status["ok"] + status["mismatch"]
    known_hits = sum(len(c) for k, c in failures.items() if k.startswith("known bug "))
    lo, hi = args.max_seq_len
    command = (f"python benchmarks/fuzz_random_programs.py --programs {args.programs} --seed {args.seed} "
               f"--max-depth {args.max_depth} --max-seq-len {lo}-{hi} --inputs {args.inputs} "
               f"--time-limit {args.time_limit:g} --workers {args.workers}"
               + (f" --only {','.join(map(str, args.only))}" if args.only else ""))
    slowest = sorted(((r["seconds"], i) for i, r in results.items() if r != TIMEOUT and "seconds" in r),
                     reverse=True)[:5]
    summary = {
        "command": command, "title": args.title, "compiler": _git_commit(), "programs": len(indices),
        "compiled": compiled, "refused": status["refused"], "timed_out": status[TIMEOUT],
        "crashed": status["crashed"], "mismatched": status["mismatch"], "known_bug_hits": known_hits,
        "inputs_checked": checked, "inputs_skipped": skipped, "compiled_without_inputs": compiled_without_inputs,
        "seconds": round(elapsed, 1), "shrink_seconds": round(shrink_time, 1), "worker_restarts": restarts,
        "refusals": [{"count": n, "class": c, "reason": r} for (c, r), n in refusals.most_common()],
        "failures": {k: [r["i"] for r in v] for k, v in failures.items()},
        "timeouts": timeouts, "coverage": dict(sorted(coverage.items())),
        "compiled_coverage": dict(sorted(compiled_coverage.items())),
        "depths": dict(sorted(depth_hist.items())), "max_seq_lens": dict(sorted(seq_len_hist.items())),
        "reproducers": [shrunk[i] for i in sorted(shrunk)],
    }

    lines = [
        "# Random-program fuzz run" + (f": {args.title}" if args.title else ""),
        "",
        f"`{command}`",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}. "
        f"Compiler: {summary['compiler']}. Programs: tests/strategies.py (`generate_program`), depth <= "
        f"{args.max_depth}, 2-4 tokens (strings, ints or floats), max_seq_len {lo}-{hi}, ~15% compiled with "
        f"causal=True; {args.inputs} random inputs each. Outputs are compared with `raspc.utils.values.same_result` "
        "(categorical by identity, numerical within 1e-4).",
        "",
        "| | count |",
        "| --- | ---: |",
        f"| programs | {len(indices)} |",
        f"| compiled | {compiled} |",
        f"| refused (CompileError) | {status['refused']} |",
        f"| timed out (> {args.time_limit:g} s: killed) | {status[TIMEOUT]} |",
        f"| crashed (any other exception: compiler bug) | {status['crashed']} |",
        f"| programs with a mismatch (compiler bug) | {status['mismatch']} |",
        f"| crashes + mismatches that are known bugs (KNOWN_BUGS) | {known_hits} |",
        f"| inputs checked against rasp.evaluate | {checked} |",
        f"| inputs skipped (evaluator raised, or a categorical mean of different values) | {skipped} |",
        f"| compiled programs with no checkable input | {compiled_without_inputs} |",
        f"| wall time ({args.workers} workers: generate + compile + run) | {elapsed:.1f} s |",
        f"| wall time (shrinking failures) | {shrink_time:.1f} s |",
        "",
        "Depth of the programs: " + ", ".join(f"{d}: {n}" for d, n in sorted(depth_hist.items())),
        "",
        "Slowest programs: " + ", ".join(f"#{i} {s:.1f} s" for s, i in slowest),
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
    if not failures:
        lines.append("None found.")
    for key, cases in sorted(failures.items(), key=lambda kv: -len(kv[1])):
        lines += [f"### {key} ({len(cases)} programs: #" + ", #".join(str(r["i"]) for r in cases[:10])
                  + (", ..." if len(cases) > 10 else "") + ")", ""]
        for r in sorted(cases, key=lambda r: (r.get("size", 0), r["i"]))[:args.shrink_per_key]:
            s = shrunk.get(r["i"])
            if s is None or s == TIMEOUT or "script" not in s:
                why = ("timeout" if s == TIMEOUT else "it passed when run again" if s and s.get("flaky")
                       else f"the shrinker failed: {s.get('key') if s else '?'}")
                lines += [f"Program #{r['i']} (not shrunk: {why}):", "", "```", r.get("detail", ""), "```", ""]
                if s and s != TIMEOUT and s.get("detail"):
                    lines += ["```", s["detail"].rstrip(), "```", ""]
                continue
            lines.append(f"Shrunk from program #{r['i']} (vocab={s['vocab']}, max_seq_len={s['max_seq_len']}, "
                         f"causal={s['causal']}):")
            lines.append("")
            if s["status"] == "crashed":
                lines += [f"Raises `{s['error']}`", "", "```", s["traceback"].rstrip(), "```"]
            elif s["status"] == "mismatch":
                lines += [f"Input `{s['input']}`: evaluator `{s['expected']}`, model `{s['got']}`.", "",
                          f"Per-pass verification: {s['culprit']}"]
            lines += ["", "```python", s["script"], "```", ""]
    if timeouts:
        lines += ["## Timeouts", "", "Programs #" + ", #".join(map(str, timeouts)), ""]
        for i, src in timeout_sources.items():
            lines += [f"Program #{i}:", "", "```python", src, "```", ""]
    lines += ["## Known bugs (tests/strategies.py KNOWN_BUGS) and their hits in this run", ""]
    for bug in KNOWN_BUGS:
        hits = sum(len(c) for k, c in failures.items() if k.startswith(f"known bug {bug.id} "))
        repro = bug.reproducer()
        lines += [f"- **{bug.id}** ({hits} programs here): {bug.summary}. Reproducer "
                  f"(vocab={repro.vocab!r}, max_seq_len={repro.max_seq_len}, causal={repro.causal}): "
                  f"`{repro.nodes[repro.root].code}`"]
    if not KNOWN_BUGS:
        lines.append("None.")
    lines += ["", "Fixed since found (tests/strategies.py REGRESSIONS, each a test): "
              + ", ".join(r.name for r in REGRESSIONS), ""]
    lines += ["## Coverage (programs containing each feature: all generated / compiled)", "",
              "| feature | generated | compiled |", "| --- | ---: | ---: |"]
    for f in sorted(ALL_FEATURES | set(coverage)):
        lines.append(f"| {f} | {coverage[f]} | {compiled_coverage[f]} |")
    missing = sorted(ALL_FEATURES - set(coverage))
    if missing:
        lines += ["", "Never generated in this run: " + ", ".join(missing)]
    return "\n".join(lines) + "\n", summary


SUMMARY_END = "<!-- end of the summary of all runs -->"


def combine(runs: list[dict]) -> str:
    """A summary of several runs (their JSON): one row per run, a total, and the failures by kind."""
    cols = ["programs", "compiled", "refused", "timed_out", "crashed", "mismatched", "known_bug_hits",
            "inputs_checked"]
    lines = ["# Random-program fuzz runs", "",
             "| run | programs | compiled | refused | timed out | crashed | mismatched | of which known bugs "
             "| inputs checked | wall time |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    total = collections.Counter()
    for r in runs:
        total.update({c: r[c] for c in cols})
        total["seconds"] += r["seconds"] + r["shrink_seconds"]
        lines.append(f"| {r['title'] or r['command']} | " + " | ".join(f"{r[c]:,}" for c in cols)
                     + f" | {r['seconds'] + r['shrink_seconds']:.0f} s |")
    lines.append("| **total** | " + " | ".join(f"**{total[c]:,}**" for c in cols) + f" | {total['seconds']:.0f} s |")
    refusals: collections.Counter = collections.Counter()
    failures: collections.Counter = collections.Counter()
    for r in runs:
        for x in r["refusals"]:
            refusals[(x["class"], re.sub(r"'…'.*", "'…' …", x["reason"]) if "not a conjunction" in x["reason"]
                      else x["reason"])] += x["count"]
        for k, v in r["failures"].items():
            failures[k] += len(v)
    lines += ["", "Commands (each run appends its report below):", "", "```console"]
    lines += [r["command"] + f" --title '{r['title']}' --append --json benchmarks/results/fuzz.json" for r in runs]
    lines += ["```", "", f"Compiler: {runs[-1]['compiler']}." if runs else "", "",
              "To fuzz one commit while raspc/ changes, put a snapshot of it first on the path: "
              "`git archive COMMIT raspc | tar -x -C /tmp/snap && echo COMMIT > /tmp/snap/COMMIT`, then "
              "`PYTHONPATH=/tmp/snap python benchmarks/fuzz_random_programs.py ...` (the report names the "
              "commit). Timeouts depend on the machine and its load; everything else is a function of the "
              "command (and the compiler).", "",
              "Crashes and mismatches by kind (all runs):", ""]
    if failures:
        lines += ["| programs | kind |", "|---:|---|", *(f"| {n} | {k} |" for k, n in failures.most_common())]
    else:
        lines.append("None.")
    lines += ["", "Refusals by normalised reason (all runs):", "", "| count | class | reason |", "|---:|---|---|"]
    lines += [f"| {n} | {c} | {r.replace('|', '/')} |" for (c, r), n in refusals.most_common()]
    return "\n".join(lines) + "\n\n" + SUMMARY_END + "\n"


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--programs", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-depth", type=int, default=6)
    ap.add_argument("--max-seq-len", type=parse_seq_len, default=(2, 6),
                    help="LO-HI: each program's max_seq_len is drawn from LO..HI (a single N means 2-N)")
    ap.add_argument("--inputs", type=int, default=20, help="random inputs per program")
    ap.add_argument("--reuse-residual", action="store_true", help="compile with reuse_residual=True")
    ap.add_argument("--time-limit", type=float, default=60.0,
                    help="seconds each program may take (generate + compile + check); 0: no limit")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--shrink-per-key", type=int, default=2, help="failing programs shrunk per distinct failure")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "fuzz.md")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures as JSON (a list of runs)")
    ap.add_argument("--append", action="store_true", help="append the report to --out (and --json) instead of replacing it")
    ap.add_argument("--title", default="", help="a heading for this run (e.g. when appending)")
    ap.add_argument("--progress", type=int, default=0, help="print progress every N programs (stderr)")
    ap.add_argument("--verbose", action="store_true")
    ap.add_argument("--only", type=lambda s: [int(x) for x in s.split(",") if x], default=None,
                    help="run only these programs of the run (comma-separated indices), e.g. to re-check failures")
    ap.add_argument("--combine", type=Path, default=None,
                    help="only write a summary of the runs in this JSON file at the top of --out")
    args = ap.parse_args(argv)
    if args.combine is not None:
        body = args.out.read_text() if args.out.exists() else ""
        if SUMMARY_END in body:
            body = body.split(SUMMARY_END, 1)[1].lstrip("\n")
        args.out.write_text(combine(json.loads(args.combine.read_text())) + "\n---\n\n" + body)
        return 0
    args.workers = max(1, args.workers)
    report, summary = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if args.append and args.out.exists():
        report = args.out.read_text().rstrip("\n") + "\n\n---\n\n" + report
    args.out.write_text(report)
    if args.json is not None:
        runs = []
        if args.append and args.json.exists():
            runs = json.loads(args.json.read_text())
        runs.append(summary)
        args.json.write_text(json.dumps(runs, indent=1) + "\n")
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
