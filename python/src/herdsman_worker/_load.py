"""Find the function named on the command line: ``module:function`` or ``path/file.py:function``."""

import importlib
import os
import sys


def _print_exc():
    # Imported when needed: traceback is not needed to serve records, and a worker's
    # start-up is paid once per process.
    import traceback

    traceback.print_exc(file=sys.stderr)


class TargetError(Exception):
    """The function cannot be found; the message says what to change."""


def _is_file(module):
    return module.endswith(".py") or "/" in module or os.sep in module


def _import_file(path, spec_text):
    full = os.path.abspath(path)
    if not os.path.isfile(full):
        raise TargetError(
            f"no file `{path}` (from `{spec_text}`; looked in {os.getcwd()}); "
            "check the path, or give a dotted module name instead"
        )
    directory = os.path.dirname(full)
    # Like `python3 file.py`: modules beside the file can be imported.
    if directory not in sys.path:
        sys.path.insert(0, directory)
    name = os.path.splitext(os.path.basename(full))[0]
    if not name.isidentifier() or name in sys.modules:
        name = "__herdsman_worker_target__"
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, full)
    if spec is None or spec.loader is None:
        raise TargetError(f"cannot load `{path}` as a Python module; give a .py file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException as err:
        del sys.modules[name]
        if isinstance(err, (KeyboardInterrupt, SystemExit)):
            raise
        _print_exc()
        raise TargetError(
            f"importing `{path}` failed: {type(err).__name__}: {err}"
        ) from None
    return module


def _import_module(name, spec_text):
    if "" not in sys.path and os.getcwd() not in sys.path:
        # `python -m` puts the working directory first; keep that true when called otherwise.
        sys.path.insert(0, os.getcwd())
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as err:
        missing = err.name or ""
        if missing == name or name.startswith(missing + "."):
            raise TargetError(
                f"cannot find module `{name}` (from `{spec_text}`; looked in "
                f"{os.getcwd()} and PYTHONPATH); run herdsman from the directory that holds "
                "it (or set --workdir or PYTHONPATH), or name a file: path/to/module.py:function"
            ) from None
        _print_exc()
        raise TargetError(
            f"importing `{name}` failed: {type(err).__name__}: {err}; "
            "install what it needs in the Python that runs the worker"
        ) from None
    except Exception as err:  # noqa: BLE001 - any failure at import time is reported
        _print_exc()
        raise TargetError(f"importing `{name}` failed: {type(err).__name__}: {err}") from None


def load(spec_text, what="function"):
    """Return the callable named by ``module:function`` or ``path/to/file.py:function``.

    ``function`` may be a dotted path inside the module (``Class.method``). Raises
    TargetError with a one-line message when the module or the function cannot be found.
    """
    module_part, sep, attr = spec_text.rpartition(":")
    if not sep or not module_part or not attr:
        raise TargetError(
            f"expected MODULE:FUNCTION for the {what}, got `{spec_text}`; "
            "for example mymodule:transform or path/to/file.py:transform"
        )
    if _is_file(module_part):
        module = _import_file(module_part, spec_text)
    else:
        module = _import_module(module_part, spec_text)
    obj = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            names = sorted(
                n for n, v in vars(module).items()
                if callable(v) and not n.startswith("_") and not isinstance(v, type(sys))
            )
            known = ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")
            hint = f"; it defines: {known}" if names else ""
            raise TargetError(
                f"module `{module_part}` has no {what} `{attr}`{hint}"
            ) from None
    if not callable(obj):
        raise TargetError(
            f"`{spec_text}` is not callable (it is of type {type(obj).__name__}); "
            f"name a {what}"
        )
    return obj
