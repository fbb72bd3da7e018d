#!/usr/bin/env python3
"""Time shell commands round-robin and print a markdown table of wall-clock and CPU medians.

usage:
  interleave.py [--runs N] [--warmup N] [--prepare CMD] [--export-json FILE] [--records N]
                -n NAME CMD [-n NAME CMD ...]

Round k runs every command once before round k+1 starts, so that on a shared, noisy machine
a change of load over the minutes of a benchmark falls on every command alike
(bench/timeit.py runs all runs of one command before the next). Each round starts one
command further along the list (round 1: A B C, round 2: B C A, round 3: C A B, ...), so no
command always runs first, after the same neighbour or right after the untimed set-up, and
--runs that is a multiple of the number of commands puts each command in every position
equally often. --warmup N runs every command N times first, untimed (caches, page cache,
bytecode), in the same rotation. --prepare runs before every
run. For each run it records the wall-clock time and the CPU time (user + system) of every
process the command waited for (RUSAGE_CHILDREN), which a loaded machine inflates much less
than the wall-clock time. A command's exit status is recorded and does not stop the run.

The JSON has bench/timeit.py's shape ({"results":[{"command","median","min","max","times"}]})
plus "cpu_times" and "cpu_median" per command, so `timeit.py table` reads it too.
"""
import argparse
import json
import resource
import statistics
import subprocess
import sys
import time


def children_cpu():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def rotated(items, k):
    """The list started k places along: round k's order."""
    k %= len(items)
    return items[k:] + items[:k]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=0)
    parser.add_argument("--prepare")
    parser.add_argument("--export-json")
    parser.add_argument("--records", type=int)
    parser.add_argument("-n", "--name", action="append", default=[])
    parser.add_argument("command", nargs="*")
    args = parser.parse_intermixed_args()
    if len(args.name) != len(args.command) or not args.name:
        sys.exit("interleave.py: give each command a name: -n NAME CMD")

    walls = {name: [] for name in args.name}
    cpus = {name: [] for name in args.name}
    codes = {name: [] for name in args.name}
    pairs = list(zip(args.name, args.command))
    for k in range(args.warmup):
        for name, command in rotated(pairs, k):
            if args.prepare:
                subprocess.run(args.prepare, shell=True, check=True)
            subprocess.run(command, shell=True)
            print(f"warm-up {k + 1}/{args.warmup} {name}: done", file=sys.stderr)
    for k in range(args.runs):
        for name, command in rotated(pairs, k):
            if args.prepare:
                subprocess.run(args.prepare, shell=True, check=True)
            cpu0 = children_cpu()
            start = time.perf_counter()
            code = subprocess.run(command, shell=True).returncode
            walls[name].append(time.perf_counter() - start)
            cpus[name].append(children_cpu() - cpu0)
            codes[name].append(code)
            print(f"round {k + 1}/{args.runs} {name}: {walls[name][-1]:.3f} s wall, "
                  f"{cpus[name][-1]:.3f} s CPU, exit {code}", file=sys.stderr)

    results = [
        {
            "command": name,
            "median": statistics.median(walls[name]),
            "min": min(walls[name]),
            "max": max(walls[name]),
            "times": walls[name],
            "cpu_median": statistics.median(cpus[name]),
            "cpu_times": cpus[name],
            "exit_codes": codes[name],
        }
        for name in args.name
    ]
    if args.export_json:
        with open(args.export_json, "w", encoding="utf-8") as out:
            json.dump({"results": results}, out, indent=2)
            out.write("\n")

    fastest = min(r["median"] for r in results)
    least_cpu = min(r["cpu_median"] for r in results)
    header = ("| Command | Median [s] | Min [s] | Max [s] | Relative | CPU median [s] "
              "| CPU relative |")
    rule = "|:---|---:|---:|---:|---:|---:|---:|"
    if args.records:
        header += " Records/s |"
        rule += "---:|"
    print(header)
    print(rule)
    for r in results:
        line = (f"| {r['command']} | {r['median']:.3f} | {r['min']:.3f} | {r['max']:.3f} "
                f"| {r['median'] / fastest:.2f} | {r['cpu_median']:.3f} "
                f"| {r['cpu_median'] / least_cpu:.2f} |")
        if args.records:
            line += f" {args.records / r['median']:,.0f} |"
        print(line)


if __name__ == "__main__":
    main()
