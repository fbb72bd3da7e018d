#!/usr/bin/env python3
"""herdsman's Python API against the Python pools people use today, side by side in one run.

usage: python3 bench/python_api/bench.py [a|b|c|all] [--runs N] [--jobs N]

(a) the reference workload (count primes <= value, 20,000 items, values 0..1000, seed 1),
    executor="process", against ProcessPoolExecutor (chunksize tuned: the best of 16, 64,
    256), multiprocessing.Pool, joblib, mpire and one process;
(b) I/O-bound: time.sleep(0.01) on 2,000 items, 64 threads, against ThreadPoolExecutor(64);
(c) per-item overhead of a trivial function on threads (200,000 items, default workers)
    against ThreadPoolExecutor's default.
In (a), "split" is the floor: the items cut into JOBS interleaved shares beforehand, one
forked process per share, nothing exchanged until a share is done: what the processes cost
with no coordination at all, which no contender can beat by much.

Each measurement runs in a fresh interpreter (pool start-up included, interpreter start-up
and imports not), the contenders round-robin, RUNS times (default 3), after WARMUP untimed
rounds (default 1); each round starts one contender further along the list, so that none
always runs first or after the same neighbour; the table shows the
median, min and max, each median's ratio to herdsman's, and the median CPU time (user +
system) of the process and of the worker processes it waited for (and its ratio to
herdsman's), of the process alone (parent CPU), and the core use (CPU time over the
cores times the wall time, median of the rounds: how busy the run kept the cores): on a
loaded machine the
wall times say more about the scheduler than about the contenders, the CPU times less so.
Every run checks its answer.
joblib and mpire are installed from PyPI if missing; herdsman must be installed
(pip install ./crates/herdsman-py).
"""
import argparse
import importlib
import json
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))

RUNNER = r"""
import json, os, random, sys, time
sys.path.insert(0, {here!r})
import workload
name, bench, jobs = sys.argv[1], sys.argv[2], int(sys.argv[3])
if bench == "a":
    rng = random.Random(1)
    items = [rng.randint(0, 1000) for _ in range(20000)]
    fn = workload.count_primes
elif bench == "b":
    items = list(range(2000)); fn = workload.io_bound; jobs = 64
else:
    items = list(range(200000)); fn = workload.trivial
# Imports before the clock starts, for every contender.
if name == "herdsman":
    import herdsman
elif name.startswith("futures"):
    import concurrent.futures
elif name == "mp":
    import multiprocessing.pool
elif name == "joblib":
    import joblib
elif name == "mpire":
    import mpire
elif name == "split":
    sys.path.insert(0, os.path.dirname({here!r}))
    from python_pools import split
import resource
def cpu():
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime
def parent_cpu():
    me = resource.getrusage(resource.RUSAGE_SELF)
    return me.ru_utime + me.ru_stime
c0 = cpu()
p0 = parent_cpu()
t0 = time.perf_counter()
if name == "herdsman":
    ex = "process" if bench == "a" else "thread"
    out = herdsman.parallel_map(fn, items, executor=ex, workers=None if bench == "c" else jobs).values()
    # The worker processes stay for a next map; stop them inside the clock, as the pools'
    # `with` blocks do, so that their CPU time is counted (RUSAGE_CHILDREN) like the pools'.
    herdsman.shutdown_workers()
elif name.startswith("futures"):
    if bench == "a":
        from concurrent.futures import ProcessPoolExecutor as P
        with P(jobs) as p:
            out = list(p.map(fn, items, chunksize=int(name.split(":")[1])))
    else:
        from concurrent.futures import ThreadPoolExecutor as P
        with P(None if bench == "c" else jobs) as p:
            out = list(p.map(fn, items))
elif name == "mp":
    from multiprocessing import Pool
    with Pool(jobs) as p:
        out = p.map(fn, items)
elif name == "joblib":
    from joblib import Parallel, delayed
    out = Parallel(n_jobs=jobs)(delayed(fn)(x) for x in items)
elif name == "mpire":
    from mpire import WorkerPool
    with WorkerPool(n_jobs=jobs) as p:
        out = p.map(fn, [(x,) for x in items])
elif name == "seq":
    out = [fn(x) for x in items]
elif name == "split":
    # The floor: shares cut beforehand, one forked process each, nothing exchanged until a
    # share is done (bench/python_pools.py).
    out = split(fn, items, jobs)
elapsed = time.perf_counter() - t0
# CPU seconds of this process and of the worker processes it has waited for (joblib's loky
# workers outlive the call and are not counted).
used = cpu() - c0
parent = parent_cpu() - p0
expect = [fn(x) for x in items[:50]] if bench != "b" else items[:50]
assert out[:50] == expect and len(out) == len(items), "wrong answer"
print(json.dumps([elapsed, used, parent]))
"""


def ensure(pkg):
    try:
        importlib.import_module(pkg)
    except ImportError:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", pkg], check=True)


def measure(name, bench, jobs):
    code = RUNNER.format(here=HERE)
    out = subprocess.run([sys.executable, "-c", code, name, bench, str(jobs)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def table(bench, contenders, runs, jobs, warmup=1):
    times = {c: [] for c in contenders}
    cpus = {c: [] for c in contenders}
    parents = {c: [] for c in contenders}
    for k in range(warmup):
        for c in contenders[k % len(contenders):] + contenders[:k % len(contenders)]:
            measure(c, bench, jobs)
    for k in range(runs):
        for c in contenders[k % len(contenders):] + contenders[:k % len(contenders)]:
            elapsed, used, parent = measure(c, bench, jobs)
            times[c].append(elapsed)
            cpus[c].append(used)
            parents[c].append(parent)
    base = statistics.median(times["herdsman"])
    print(f"\n### ({bench}) median of {runs} runs, {jobs} jobs\n")
    base_cpu = statistics.median(cpus["herdsman"])
    print("| contender | median s | min s | max s | median / herdsman's | median CPU s "
          "| CPU / herdsman's | parent CPU s | core use |")
    print("|---|---|---|---|---|---|---|---|---|")
    for c in contenders:
        t = times[c]
        m = statistics.median(t)
        cm = statistics.median(cpus[c])
        used = "n/a" if c == "joblib" else f"{cm:.3f}"
        ratio = "n/a" if c == "joblib" or base_cpu <= 0 else f"{cm / base_cpu:.2f}x"
        parent = f"{statistics.median(parents[c]):.3f}"
        # How much of the cores the run kept busy: CPU time over cores x wall time, per round.
        cores = os.cpu_count() or 1
        busy = "n/a" if c == "joblib" else \
            f"{statistics.median(u / (cores * w) for u, w in zip(cpus[c], t)):.3f}"
        print(f"| {c} | {m:.3f} | {min(t):.3f} | {max(t):.3f} | {m / base:.2f}x | {used} "
              f"| {ratio} | {parent} | {busy} |")
    sys.stdout.flush()
    return times


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("which", nargs="?", default="all", choices=["a", "b", "c", "all"])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--warmup", type=int, default=1,
                        help="untimed rounds before the timed ones (default 1)")
    args = parser.parse_args()
    import herdsman  # noqa: F401  (fail early when the package is not installed)

    if args.which in ("a", "all"):
        ensure("joblib")
        ensure("mpire")
        # Tune ProcessPoolExecutor's chunksize first: keep its best.
        best = min((measure(f"futures:{c}", "a", args.jobs)[0], c) for c in (16, 64, 256))[1]
        times = table("a", ["herdsman", f"futures:{best}", "mp", "joblib", "mpire", "seq", "split"],
                      args.runs, args.jobs, args.warmup)
        med = {c: statistics.median(t) for c, t in times.items()}
        fastest = min(("futures:%d" % best, "mp", "joblib", "mpire"), key=med.get)
        print(f"\n- fastest pool {fastest} {med[fastest]:.3f} s; herdsman {med['herdsman']:.3f} s: "
              f"{med[fastest] / med['herdsman']:.2f}x as fast (goal 1.10x); the floor (split) "
              f"{med['split']:.3f} s: {med[fastest] / med['split']:.2f}x the fastest pool.")
        # The same ratios round by round, which a drift of the machine's speed moves less.
        def per_round(a, b):
            return statistics.median(x / y for x, y in zip(times[a], times[b]))
        print(f"- median of the per-round ratios: herdsman {per_round(fastest, 'herdsman'):.2f}x "
              f"the fastest pool, the floor {per_round(fastest, 'split'):.2f}x the fastest pool.")
    if args.which in ("b", "all"):
        table("b", ["herdsman", "futures"], args.runs, 64, args.warmup)
    if args.which in ("c", "all"):
        table("c", ["herdsman", "futures"], args.runs, args.jobs, args.warmup)


if __name__ == "__main__":
    main()
