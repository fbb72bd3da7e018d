#!/usr/bin/env python3
"""Time shell commands and print markdown tables of the medians (a small hyperfine stand-in).

usage:
  timeit.py run [--runs N] [--prepare CMD] [--export-json FILE] -n NAME CMD [-n NAME CMD ...]
      Runs each CMD (through sh -c) N times, in N rounds that each run every CMD once (each
      round starting one CMD further along), running --prepare before every run, and writes
      hyperfine-shaped JSON: {"results":[{"command":NAME,"median":s,"min":s,"max":s,"times":[…]}]}.
      A command's exit status is recorded but does not stop the run (like hyperfine -i).
  timeit.py table FILE.json [--records N]
      Prints a markdown table (median, min, max, relative to the fastest) of a JSON file
      written by `run` or by `hyperfine --export-json`; with --records N, adds records/s.

bench/cli_bench.sh uses hyperfine when it is installed and this script otherwise; it always
uses `table` so every benchmark reports medians.
"""
import argparse
import json
import statistics
import subprocess
import sys
import time


def run(args: argparse.Namespace) -> None:
    names, commands = args.name, args.command
    if len(names) != len(commands):
        sys.exit("timeit.py: give each command a name: -n NAME CMD")
    results = []
    times = {name: [] for name in names}
    codes = {name: [] for name in names}
    # Rounds: each runs every command once, starting one command further along the list
    # than the round before, so a machine whose load drifts weighs on every command alike.
    for round_ in range(args.runs):
        for k in range(len(names)):
            i = (round_ + k) % len(names)
            if args.prepare:
                subprocess.run(args.prepare, shell=True, check=True)
            start = time.perf_counter()
            codes[names[i]].append(subprocess.run(commands[i], shell=True).returncode)
            times[names[i]].append(time.perf_counter() - start)
    for name in names:
        results.append({
            "command": name,
            "median": statistics.median(times[name]),
            "min": min(times[name]),
            "max": max(times[name]),
            "times": times[name],
            "exit_codes": codes[name],
        })
        print(f"{name}: median {statistics.median(times[name]):.3f} s over {args.runs} runs",
              file=sys.stderr)
    text = json.dumps({"results": results}, indent=2)
    if args.export_json:
        with open(args.export_json, "w", encoding="utf-8") as out:
            out.write(text + "\n")
    else:
        print(text)


def table(args: argparse.Namespace) -> None:
    with open(args.file, encoding="utf-8") as src:
        results = json.load(src)["results"]
    fastest = min(r["median"] for r in results)
    header = "| Command | Median [s] | Min [s] | Max [s] | Runs | Relative |"
    rule = "|:---|---:|---:|---:|---:|---:|"
    if args.records:
        header += " Records/s |"
        rule += "---:|"
    print(header)
    print(rule)
    for r in results:
        line = (f"| {r['command']} | {r['median']:.3f} | {r['min']:.3f} | {r['max']:.3f} "
                f"| {len(r['times'])} | {r['median'] / fastest:.2f} |")
        if args.records:
            line += f" {args.records / r['median']:,.0f} |"
        print(line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["run", "table"])
    p_run = argparse.ArgumentParser(prog="timeit.py run")
    p_run.add_argument("--runs", type=int, default=3)
    p_run.add_argument("--prepare")
    p_run.add_argument("--export-json")
    p_run.add_argument("-n", "--name", action="append", default=[])
    p_run.add_argument("command", nargs="*")
    p_table = argparse.ArgumentParser(prog="timeit.py table")
    p_table.add_argument("file")
    p_table.add_argument("--records", type=int)
    args = parser.parse_args(sys.argv[1:2])
    # Names and commands alternate (-n A cmd -n B cmd), which needs intermixed parsing.
    args = (p_run if args.action == "run" else p_table).parse_intermixed_args(sys.argv[2:])
    run(args) if hasattr(args, "runs") else table(args)


if __name__ == "__main__":
    main()
