"""``python -m herdsman_worker [--setup MODULE:FUNCTION] MODULE:FUNCTION``: serve a function."""

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


def _quick_parse(argv):
    """(target, setup, protocol) for the usual command lines, or None for anything else.

    Every worker process parses its arguments once at start-up; importing argparse (and the
    modules it pulls in for help output) costs more than the rest of the start-up of this
    package, so the plain forms are read here and only the others go to argparse: help,
    --version, an unknown option or a mistake, all with argparse's usual messages.
    """
    target = setup = protocol = None
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg.startswith("-"):
            name, eq, value = arg.partition("=")
            if name not in ("--setup", "--protocol"):
                return None
            if not eq:
                i += 1
                if i >= len(argv) or argv[i].startswith("-"):
                    return None
                value = argv[i]
            if name == "--setup" and setup is None and value:
                setup = value
            elif name == "--protocol" and protocol is None and value in PROTOCOLS:
                protocol = value
            else:
                return None
        elif target is None:
            target = arg
        else:
            return None
        i += 1
    if target is None:
        return None
    return target, setup, protocol


def _parse(argv):
    import argparse

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
    return args.target, args.setup, args.protocol


def main(argv=None):
    if argv is None:
        argv = sys.argv[1:]
    target, setup_spec, protocol = _quick_parse(argv) or _parse(argv)

    # Before any user code is imported: from here on fd 1 is stderr, and only replies reach
    # herdsman.
    protect_stdio()
    try:
        setup = load(setup_spec, "setup function") if setup_spec else None
        fn = load(target)
    except TargetError as err:
        sys.stderr.write(f"herdsman_worker: {err}\n")
        return 2
    try:
        serve(fn, protocol=protocol, setup=setup)
    except WorkerExit as err:
        return err.code
    except BrokenPipeError:
        # herdsman closed our output: it is stopping this worker.
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
