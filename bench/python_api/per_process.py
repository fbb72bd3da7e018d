#!/usr/bin/env python3
"""CPU time of each worker process of one map of bench (a), read before the workers exit.

usage: python3 bench/python_api/per_process.py CONTENDER [WORKERS [ITEMS]]

CONTENDER is ``herdsman`` (``parallel_map(..., executor="process")``), ``futures:CHUNKSIZE``
(``ProcessPoolExecutor``, fork), ``mp`` (``multiprocessing.Pool``) or ``seq`` (one process).
Prints one JSON line: the wall time of the map, the CPU time of this process (``ru_self``)
and of the processes it waited for (``ru_kids``), and for every worker process its CPU time
from ``/proc/PID/schedstat`` (nanoseconds, read after the map and before the pool is shut
down), its context switches, CPU migrations and minor page faults from ``/proc/PID/sched``
and ``/proc/PID/stat``.

With ``HERDSMAN_WORKER_PYTHON=/path/to/wrapper``, herdsman starts its workers through that
program instead of ``sys.executable`` (for example a shell script that runs the interpreter
under ``valgrind --tool=cachegrind --cache-sim=no``, to count each worker's instructions; run
the pools' whole command under cachegrind instead, which follows their forked workers).
"""
import json
import os
import random
import resource
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import workload  # noqa: E402


def sched(pid):
    """CPU seconds and scheduler counts of one live process."""
    keys = ("nr_migrations", "nr_voluntary_switches", "nr_involuntary_switches")
    d = {}
    with open(f"/proc/{pid}/sched") as f:
        for line in f:
            k, _, v = line.partition(":")
            k = k.strip().split(".")[-1]
            if k in keys:
                d[k] = int(float(v))
    with open(f"/proc/{pid}/stat") as f:
        d["minflt"] = int(f.read().rsplit(")", 1)[1].split()[7])
    with open(f"/proc/{pid}/schedstat") as f:
        d["cpu"] = int(f.read().split()[0]) / 1e9
    return d


def children():
    me = os.getpid()
    out = []
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                with open(f"/proc/{p}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == me:
                        out.append(int(p))
            except OSError:
                pass
    return out


def rusage():
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime, kids.ru_utime + kids.ru_stime


def main():
    name = sys.argv[1]
    jobs = int(sys.argv[2]) if len(sys.argv) > 2 else 2
    n = int(sys.argv[3]) if len(sys.argv) > 3 else 20000
    rng = random.Random(1)
    items = [rng.randint(0, 1000) for _ in range(n)]
    fn = workload.count_primes
    if name == "herdsman":
        import herdsman

        if os.environ.get("HERDSMAN_WORKER_PYTHON"):
            sys.executable = os.environ["HERDSMAN_WORKER_PYTHON"]
    r0 = rusage()
    t0 = time.perf_counter()
    if name == "herdsman":
        out = herdsman.parallel_map(fn, items, executor="process", workers=jobs).values()
        wall = time.perf_counter() - t0
        workers = [sched(p) for p in children() if os.path.exists(f"/proc/{p}/sched")]
        herdsman.shutdown_workers()
    elif name.startswith("futures:"):
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(jobs) as p:
            out = list(p.map(fn, items, chunksize=int(name.split(":")[1])))
            wall = time.perf_counter() - t0
            workers = [sched(pid) for pid in p._processes]
    elif name == "mp":
        from multiprocessing import Pool

        with Pool(jobs) as p:
            out = p.map(fn, items)
            wall = time.perf_counter() - t0
            workers = [sched(w.pid) for w in p._pool]
    elif name == "seq":
        out = [fn(x) for x in items]
        wall = time.perf_counter() - t0
        workers = []
    else:
        raise SystemExit(f"unknown contender {name!r}: herdsman, futures:CHUNKSIZE, mp or seq")
    r1 = rusage()
    assert len(out) == n and out[:50] == [fn(x) for x in items[:50]], "wrong answer"
    print(json.dumps({
        "name": name, "wall": round(wall, 3),
        "ru_self": round(r1[0] - r0[0], 3), "ru_kids": round(r1[1] - r0[1], 3),
        "workers_cpu": round(sum(w["cpu"] for w in workers), 3), "workers": workers,
    }))


if __name__ == "__main__":
    main()
