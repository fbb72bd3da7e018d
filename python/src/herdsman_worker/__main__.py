"""``python -m herdsman_worker [--setup MODULE:FUNCTION] MODULE:FUNCTION``: serve a function."""

import argparse
import sys

from . import PROTOCOLS, WorkerExit, __version__, protect_stdio, serve
from ._load import TargetError, load

USAGE_EXAMPLES = """\
examples:
  herdsman run -i in.csv -o out.jsonl --protocol framed \\
      -w 'python3 -m herdsman_worker mymodule:transform'
  python3 -m herdsman_worker path/to/file.py:transform --setup path/to/file.py:load_model

The function gets each record and returns a dict (one output), None (filtered), or a
list (one output per element); raising fails the record, herdsman_worker.Retryable
retryably. See docs/protocol.md, "Writing a worker in Python".
"""


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python3 -m herdsman_worker",
        description="Serve a plain Python function as a herdsman worker.",
        epilog=USAGE_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "target",
        metavar="MODULE:FUNCTION",
        help="the function to run on every record: a dotted module (mypkg.jobs:transform) "
        "or a file (path/to/file.py:transform)",
    )
    parser.add_argument(
        "--setup",
        metavar="MODULE:FUNCTION",
        help="a function called once, with no arguments, before the first record "
        "(load a model, open a connection)",
    )
    parser.add_argument(
        "--protocol",
        choices=PROTOCOLS,
        help="the wire protocol; must match herdsman's --protocol "
        "(default: $HERDSMAN_PROTOCOL, else framed)",
    )
    parser.add_argument("--version", action="version", version=f"herdsman_worker {__version__}")
    args = parser.parse_args(argv)

    # Before any user code is imported: from here on fd 1 is stderr, and only replies reach
    # herdsman.
    protect_stdio()
    try:
        setup = load(args.setup, "setup function") if args.setup else None
        fn = load(args.target)
    except TargetError as err:
        sys.stderr.write(f"herdsman_worker: {err}\n")
        return 2
    try:
        serve(fn, protocol=args.protocol, setup=setup)
    except WorkerExit as err:
        return err.code
    except BrokenPipeError:
        # herdsman closed our output: it is stopping this worker.
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
