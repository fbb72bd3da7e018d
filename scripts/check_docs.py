#!/usr/bin/env python3
"""Runs every ```sh block of README.md, docs/*.md and examples/**/*.md as written.

Each block runs with `bash -euo pipefail` in its own scratch copy of the repository's
examples, docs, python and bench directories, with the herdsman binary first on PATH, and
must exit 0 (or the status its marker names) within a time limit. A block that cannot run in CI (it needs a network, a server,
a release build or minutes of benchmarking) is preceded by a marker line that says why:

    <!-- check-docs: skip REASON -->

a block meant to run in a subdirectory by

    <!-- check-docs: cwd examples/primes -->

and a block whose last command is documented to exit with another status than 0 (a run
with bad rows exits 1) by

    <!-- check-docs: exit 1 (the data has bad rows) -->

Markers stand on the lines right above the fence, one per line.

Lines that build or install what the check already provides are left out: `cargo build ...`
and `cargo test ...` (the binary is built, the tests run before this check),
`pip install ./python` (installed by CI), and `export PATH=...` keeps PATH as given;
`cargo run --release -p herdsman-cli -- ARGS` runs `herdsman ARGS`. ```console blocks are
transcripts with their output and are not run.

usage: scripts/check_docs.py [--bin DIR]   (default: target/debug, then target/release)
CHECK_DOCS_TIMEOUT=SECONDS sets the time limit of each block (default 300).
"""

import argparse
import glob
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MARKER = re.compile(r"^<!--\s*check-docs:\s*(skip|cwd|exit)\s+(.*?)\s*-->\s*$")
TIMEOUT_S = int(os.environ.get("CHECK_DOCS_TIMEOUT", "300"))
COPIED = ["README.md", "docs", "examples", "python", "bench"]


def blocks(path):
    """Yields (line number, marker, text) for every ```sh block of a Markdown file."""
    lines = open(path, encoding="utf-8").read().split("\n")
    i = 0
    while i < len(lines):
        if re.match(r"^```(sh|bash|shell)\s*$", lines[i]):
            j = i + 1
            while j < len(lines) and not lines[j].startswith("```"):
                j += 1
            markers = {}
            k = i - 1
            while k >= 0 and MARKER.match(lines[k]):
                m = MARKER.match(lines[k])
                markers[m.group(1)] = m.group(2)
                k -= 1
            yield i + 1, markers, "\n".join(lines[i + 1 : j])
            i = j
        i += 1


def prepare(text):
    """The block with the build and install lines the check provides left out."""
    out = []
    skipping_continuation = False
    for line in text.split("\n"):
        if skipping_continuation:
            skipping_continuation = line.rstrip().endswith("\\")
            continue
        stripped = line.strip()
        if re.match(r"^(cargo (build|test)\b|pip3? install \./python|export PATH=)", stripped):
            skipping_continuation = stripped.endswith("\\")
            continue
        out.append(re.sub(r"^cargo run --release -p herdsman-cli -- ", "herdsman ", line))
    return "\n".join(out) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin", help="directory holding the herdsman binary")
    args = ap.parse_args()
    bindir = args.bin
    if bindir is None:
        for cand in ("target/debug", "target/release"):
            if os.path.exists(os.path.join(ROOT, cand, "herdsman")):
                bindir = os.path.join(ROOT, cand)
                break
    if bindir is None or not os.path.exists(os.path.join(bindir, "herdsman")):
        sys.exit("error: no herdsman binary; run `cargo build -p herdsman-cli` first, or pass --bin DIR")
    env = dict(os.environ, PATH=os.path.abspath(bindir) + os.pathsep + os.environ["PATH"])

    files = ["README.md"] + sorted(glob.glob("docs/*.md", root_dir=ROOT))
    files += sorted(glob.glob("examples/**/*.md", root_dir=ROOT, recursive=True))
    ran = skipped = 0
    failed = []
    for rel in files:
        for line, marker, text in blocks(os.path.join(ROOT, rel)):
            where = f"{rel}:{line}"
            if "skip" in marker:
                print(f"skip {where}: {marker['skip']}")
                skipped += 1
                continue
            with tempfile.TemporaryDirectory(prefix="check-docs-") as scratch:
                for name in COPIED:
                    src = os.path.join(ROOT, name)
                    dst = os.path.join(scratch, name)
                    if os.path.isdir(src):
                        shutil.copytree(
                            src, dst, ignore=shutil.ignore_patterns("out", "__pycache__", "*.egg-info", "build")
                        )
                    elif os.path.exists(src):
                        shutil.copy(src, dst)
                cwd = os.path.join(scratch, marker.get("cwd", "."))
                # `exit N (why)`: the block ends with a command documented to exit N, such as
                # a run with bad rows (exit 1: done with failures).
                expected = int(marker.get("exit", "0").split()[0])
                print(f"run  {where}", flush=True)
                # Its own process group, so that a hang is killed with every worker.
                p = subprocess.Popen(
                    ["bash", "-euo", "pipefail", "-c", prepare(text)],
                    cwd=cwd,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                    start_new_session=True,
                )
                try:
                    out, err = p.communicate(timeout=TIMEOUT_S)
                    ok, detail = p.returncode == expected, f"exit {p.returncode}\n{out[-2000:]}{err[-4000:]}"
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, signal.SIGKILL)
                    out, err = p.communicate()
                    ok, detail = False, f"no end after {TIMEOUT_S} s (a hang?)\n{err[-4000:]}"
                ran += 1
                if not ok:
                    failed.append(where)
                    print(f"FAIL {where}: {detail}", file=sys.stderr)
    print(f"check-docs: {ran} blocks ran, {skipped} skipped, {len(failed)} failed")
    if failed:
        sys.exit("error: these documented commands do not run as written: " + ", ".join(failed))


if __name__ == "__main__":
    main()
