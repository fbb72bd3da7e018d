"""herdsman for Python: run one function over every item, in parallel, on herdsman's engine.

::

    import herdsman

    result = herdsman.parallel_map(fetch, urls, workers=20, rate_limit=herdsman.RateLimit(90, "minute"),
                                   retry=herdsman.Retry(attempts=3, on=(ConnectionError,)))
    if result.ok:
        values = result.values()
    else:
        for index, exc in result.failures():
            print(index, exc)

Threads (``executor="thread"``, the default) call the function holding the GIL only while
it runs; processes (``executor="process"``) are persistent worker interpreters fed pickled
items, kept for the next map (see :func:`shutdown_workers`). Every item ends exactly
once as a success or a failure. See docs/python.md.
"""

import atexit
import functools
import os
import pickle
import random
import subprocess
import sys
import tempfile
import time
from typing import (
    Any,
    AsyncIterator,
    Awaitable,
    Callable,
    Dict,
    Generic,
    Iterable,
    Iterator,
    List,
    Optional,
    Sequence,
    Tuple,
    Type,
    TypeVar,
    Union,
)

from . import _native
from ._native import RateLimit

#: Seconds the interpreter's exit waits for calls still running on herdsman's threads (a
#: call that timed out goes on until it returns; threads cannot be killed). Calls still
#: running after that are left behind when Python exits.
exit_grace: float = 10.0


def shutdown_workers() -> None:
    """Stop the worker processes that ``executor="process"`` keeps between maps now.

    A map on processes leaves its workers running for the next map with the same
    ``workers`` and ``timeout``, environment and working directory, which then starts no
    new processes; idle
    workers stop by themselves after 30 seconds and when the interpreter exits. Call this to
    free them earlier (a later map starts new ones).
    """
    _native.shutdown_idle_workers(False)


def _at_exit() -> None:
    # Workers kept between maps stop now, and so do those of runs that end from here on.
    _native.shutdown_idle_workers(True)
    # The runs' threads must leave Python before it finalizes: a thread that takes the GIL
    # during finalization is ended in a way that aborts the process. Stop every live run,
    # wait for the calls in flight, then keep the threads out of Python.
    if _native.stop_runs_at_exit() == 0:
        _native.close_at_exit(0.0, True)
        return
    left = _native.close_at_exit(min(0.5, exit_grace), False)
    if left:
        print(
            f"herdsman: waiting up to {exit_grace:g} s for {left} function call(s) still running "
            "on herdsman's threads before Python exits (a call that timed out cannot be stopped; "
            'use executor="process" for calls that may hang)',
            file=sys.stderr,
        )
        left = _native.close_at_exit(max(0.0, exit_grace - 0.5), True)
        if left:
            print(f"herdsman: exiting with {left} call(s) still running", file=sys.stderr)
    else:
        _native.close_at_exit(0.0, True)


atexit.register(_at_exit)

__all__ = [
    "parallel_map",
    "imap",
    "parallel",
    "map_async",
    "run",
    "shutdown_workers",
    "RateLimit",
    "Retry",
    "MapResult",
    "Outcome",
    "Failure",
    "ExceptionGroup",
    "HerdsmanError",
    "ItemTimeout",
    "NotRun",
    "WorkerCrashed",
    "RemoteTraceback",
    "__version__",
]

__version__ = "0.1.0"

T = TypeVar("T")
R = TypeVar("R")

try:  # Python 3.11+
    ExceptionGroup = ExceptionGroup  # type: ignore[name-defined]  # noqa: PLW0127
except NameError:  # pragma: no cover - exercised on Python < 3.11 only
    try:
        from exceptiongroup import ExceptionGroup  # type: ignore[no-redef]
    except ImportError:

        class ExceptionGroup(Exception):  # type: ignore[no-redef]
            """A stand-in for Python 3.11's ExceptionGroup: a message and ``.exceptions``."""

            def __init__(self, message: str, exceptions: Sequence[BaseException]):
                super().__init__(message, list(exceptions))
                self.message = message
                self.exceptions = tuple(exceptions)

            def __str__(self) -> str:
                n = len(self.exceptions)
                return f"{self.message} ({n} sub-exception{'s' if n != 1 else ''})"


class HerdsmanError(Exception):
    """Base class of the failures herdsman reports for an item that raised nothing itself."""


class ItemTimeout(HerdsmanError, TimeoutError):
    """The item ran longer than ``timeout`` (or was still running at the ``deadline``)."""


class NotRun(HerdsmanError):
    """The item was never started because the run stopped first (deadline, max_errors, Ctrl-C)."""


class WorkerCrashed(HerdsmanError):
    """The worker process died while running this item (a crash, a signal, ``os._exit``)."""


class RemoteTraceback(Exception):
    """The traceback of an exception raised in a worker process (set as its ``__cause__``)."""

    def __init__(self, tb: str):
        super().__init__(tb)
        self.tb = tb

    def __str__(self) -> str:
        return self.tb


class Retry:
    """Per-item retry policy.

    ``attempts`` counts every try (1 = no retry); the wait after the n-th failure is
    ``backoff * 2**(n-1)`` seconds, at most ``max_delay``, randomized within its upper half
    when ``jitter``. Only exceptions that are instances of ``on`` are retried (all by
    default). ``retry_after(exc)`` may return a number of seconds the server asked to wait
    (HTTP 429 Retry-After): the retry waits that long and the run's rate limiter is paused
    as long. ``retry_timeouts`` also retries items that hit ``timeout``.
    """

    def __init__(
        self,
        attempts: int = 3,
        backoff: float = 1.0,
        max_delay: Optional[float] = 30.0,
        jitter: bool = True,
        on: Union[Type[BaseException], Tuple[Type[BaseException], ...], None] = None,
        retry_after: Optional[Callable[[BaseException], Optional[float]]] = None,
        retry_timeouts: bool = False,
    ):
        if attempts < 1:
            raise ValueError(f"Retry(attempts={attempts}): give at least 1 (1 means no retry)")
        if backoff < 0:
            raise ValueError(f"Retry(backoff={backoff}): give a non-negative number of seconds")
        if isinstance(on, type):
            on = (on,)
        self.attempts = attempts
        self.backoff = backoff
        self.max_delay = max_delay
        self.jitter = jitter
        self.on = tuple(on) if on is not None else None
        self.retry_after = retry_after
        self.retry_timeouts = retry_timeouts

    def _spec(self) -> Dict[str, Any]:
        return dict(
            attempts=self.attempts,
            backoff=float(self.backoff),
            max_delay=None if self.max_delay is None else float(self.max_delay),
            jitter=self.jitter,
            on=self.on,
            retry_after=self.retry_after,
            retry_timeouts=self.retry_timeouts,
        )

    def __repr__(self) -> str:
        return (
            f"Retry(attempts={self.attempts}, backoff={self.backoff}, max_delay={self.max_delay}, "
            f"jitter={self.jitter}, on={self.on}, retry_after={self.retry_after})"
        )


class Failure(tuple):
    """One failed item: unpacks as ``(index, exception)``; also ``.attempts`` and ``.duration``
    (seconds spent in its attempts)."""

    index: int
    exception: BaseException
    attempts: int
    duration: float

    def __new__(cls, index: int, exception: BaseException, attempts: int, duration: float):
        self = tuple.__new__(cls, (index, exception))
        self.index = index
        self.exception = exception
        self.attempts = attempts
        self.duration = duration
        return self

    def __repr__(self) -> str:
        return (
            f"Failure(index={self.index}, exception={self.exception!r}, "
            f"attempts={self.attempts}, duration={self.duration:.6f})"
        )


class Outcome(Generic[R]):
    """One item's final outcome, as :func:`imap` yields them."""

    __slots__ = ("index", "value", "exception", "attempts", "duration")

    def __init__(self, index, value, exception, attempts, duration):
        self.index: int = index
        self.value: Optional[R] = value
        self.exception: Optional[BaseException] = exception
        self.attempts: int = attempts
        self.duration: float = duration

    @property
    def ok(self) -> bool:
        """True when the item produced a value."""
        return self.exception is None

    def unwrap(self) -> R:
        """The value, or raise the item's exception."""
        if self.exception is not None:
            raise self.exception
        return self.value  # type: ignore[return-value]

    def __repr__(self) -> str:
        if self.exception is None:
            return f"Outcome(index={self.index}, value={self.value!r}, attempts={self.attempts})"
        return f"Outcome(index={self.index}, exception={self.exception!r}, attempts={self.attempts})"


class MapResult(Generic[R]):
    """The result of :func:`parallel_map`.

    Iterating yields the values in input order (completion order with ``ordered=False``);
    at the first failed item it raises an :class:`ExceptionGroup` holding every failure.
    Check :attr:`ok` first to avoid that, or use :meth:`successes` and :meth:`failures`.
    """

    def __init__(self, values: List[Tuple[int, R]], failures: List[Failure], summary: Dict[str, Any]):
        self._idx: List[int] = [i for i, _ in values]
        self._vals: List[R] = [v for _, v in values]
        self._failures = failures
        self._summary = summary

    @classmethod
    def _columns(cls, indices: List[int], vals: List[R], failures: List[Failure],
                 summary: Dict[str, Any]) -> "MapResult[R]":
        """A result from the successes' indices and values as two lists, in the same order."""
        self = cls.__new__(cls)
        self._idx = indices
        self._vals = vals
        self._failures = failures
        self._summary = summary
        return self

    @property
    def _values(self) -> List[Tuple[int, R]]:
        return list(zip(self._idx, self._vals))

    @property
    def ok(self) -> bool:
        """True when every item produced a value and the run completed."""
        return not self._failures and self._summary.get("status") == "completed"

    @property
    def status(self) -> str:
        """How the run ended: ``completed``, ``timed_out`` (deadline), ``aborted``
        (max_errors), ``cancelled`` (Ctrl-C) or ``executor_failed``."""
        return self._summary.get("status", "unknown")

    @property
    def summary(self) -> Dict[str, Any]:
        """Final counters: succeeded, failed, not_run, retries, admitted, elapsed (s)."""
        return dict(self._summary)

    def successes(self) -> List[Tuple[int, R]]:
        """``(index, value)`` for every item that produced a value."""
        return list(self._values)

    def failures(self) -> List[Failure]:
        """``(index, exception)`` for every failed item (with ``.attempts``, ``.duration``)."""
        return list(self._failures)

    def values(self) -> List[R]:
        """Every value in order; raises :class:`ExceptionGroup` if any item failed."""
        if not self._failures and self.status == "completed":
            return list(self._vals)
        return list(self)

    def _group(self) -> BaseException:
        excs = [f.exception for f in self._failures]
        n = len(excs)
        return ExceptionGroup(
            f"{n} of {n + len(self._idx)} items failed (first: item {self._failures[0].index}); "
            "see result.failures() for each index and exception",
            excs,
        )

    def __iter__(self) -> Iterator[R]:
        if not self._failures:
            yield from self._vals
            if self.status != "completed":
                raise ExceptionGroup(
                    f"the run ended early ({self.status}) before every item ran",
                    [HerdsmanError(self._summary.get("message") or self.status)],
                )
            return
        first = min(f.index for f in self._failures)
        for i, v in zip(self._idx, self._vals):
            if i > first:
                break
            yield v
        raise self._group()

    def __len__(self) -> int:
        return len(self._idx) + len(self._failures)

    def __repr__(self) -> str:
        return (
            f"<MapResult {self.status}: {len(self._idx)} succeeded, "
            f"{len(self._failures)} failed>"
        )


# ---------------------------------------------------------------------------------------
# Running


def _default_workers(executor: str) -> int:
    cpus = os.cpu_count() or 1
    if executor == "thread":
        return min(32, cpus + 4)
    return cpus


def _limiter(rate_limit):
    if rate_limit is None or isinstance(rate_limit, RateLimit):
        return rate_limit
    if isinstance(rate_limit, bool) or not isinstance(rate_limit, (int, float)):
        raise TypeError(
            f"rate_limit={rate_limit!r}: give a number (per second) or herdsman.RateLimit(n, 'minute')"
        )
    if rate_limit != int(rate_limit):
        raise ValueError(
            f"rate_limit={rate_limit}: give a whole number per second, or RateLimit(n, 'minute')"
        )
    return RateLimit(int(rate_limit), "second")


def _pickle_fn(fn) -> Tuple[bytes, Optional[str], bool]:
    """Pickle the function for the workers: ``(bytes, main script path, needs cloudpickle)``."""
    main_path = None
    if getattr(fn, "__module__", None) == "__main__":
        main = sys.modules.get("__main__")
        main_path = getattr(main, "__file__", None)
        if main_path is None:
            try:
                import cloudpickle
            except ImportError:
                raise TypeError(
                    f"{fn!r} is defined in an interactive session, which worker processes cannot "
                    "import; define it in a module, install cloudpickle, or use executor='thread'"
                ) from None
            return cloudpickle.dumps(fn), None, True
        main_path = os.path.abspath(main_path)
    try:
        return pickle.dumps(fn, protocol=pickle.HIGHEST_PROTOCOL), main_path, False
    except Exception as err:  # noqa: BLE001 - lambdas, closures, bound methods of local classes
        try:
            import cloudpickle
        except ImportError:
            raise TypeError(
                f"cannot send {fn!r} to worker processes: {err}. Worker processes look "
                "functions up by module and name: define it with def at the top level of a "
                "module, install cloudpickle (lambdas and closures then work), or use "
                "executor='thread'"
            ) from None
        return cloudpickle.dumps(fn), main_path, True


# Pickles one item for the worker processes; called from Rust once per item (a partial of
# the C function: no Python frame per item).
_dumps_item = functools.partial(pickle.dumps, protocol=pickle.HIGHEST_PROTOCOL)


def _start(fn, items, *, executor, workers, rate_limit, batch_size, retry, timeout, deadline,
           max_errors, ordered, on_progress, inline_ok):
    if executor not in ("thread", "process"):
        raise ValueError(f"executor={executor!r}: use 'thread' or 'process'")
    if not callable(fn):
        raise TypeError(f"{fn!r} is not callable; pass the function to run on every item")
    if workers is None:
        workers = _default_workers(executor)
    if workers < 1:
        raise ValueError(f"workers={workers}: give at least 1")
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size={batch_size}: give at least 1")
    if retry is not None and not isinstance(retry, Retry):
        raise TypeError(f"retry={retry!r}: give herdsman.Retry(...)")
    total = None
    try:
        total = len(items)  # type: ignore[arg-type]
    except TypeError:
        pass
    kwargs: Dict[str, Any] = dict(
        executor=executor,
        workers=workers,
        sequential=workers == 1 and executor == "thread",
        ordered=ordered,
        window=batch_size,
        limiter=_limiter(rate_limit),
        retry=None,
        timeout=timeout,
        deadline=deadline,
        max_errors=max_errors,
        total=total,
        on_progress=on_progress,
        worker_argv=[],
        worker_env=[],
        pickle_item=None,
        pipeline_depth=None,
        cleanup=None,
        inline=inline_ok and workers == 1 and executor == "thread",
        # Without per-item policies, threads take items in chunks sized from measured
        # durations (one GIL hand-off per chunk); with them, the engine sees every item.
        chunked=executor == "thread" and retry is None and timeout is None
        and rate_limit is None and max_errors is None and batch_size is None,
    )
    if executor == "thread":
        kwargs["retry"] = retry._spec() if retry else None
        return _native.start(fn, items, **kwargs)
    data, main_path, cloud = _pickle_fn(fn)
    spec = retry._spec() if retry else None
    setup = {"fn": data, "main_path": main_path, "sys_path": list(sys.path), "cloudpickle": cloud,
             "retry_on": spec["on"] if spec else None,
             "retry_after": spec["retry_after"] if spec else None}
    fd, path = tempfile.mkstemp(prefix="herdsman-py-", suffix=".pickle")
    try:
        with os.fdopen(fd, "wb") as f:
            try:
                pickle.dump(setup, f, protocol=pickle.HIGHEST_PROTOCOL)
            except Exception as err:  # noqa: BLE001
                raise TypeError(
                    f"cannot send the retry policy to worker processes: {err}; give `on` as "
                    "exception classes and `retry_after` as a module-level function"
                ) from None
        if spec:
            spec = dict(spec, on=None, retry_after=None)
        pkg_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        pythonpath = os.pathsep.join(p for p in [pkg_root, os.environ.get("PYTHONPATH")] if p)
        kwargs.update(
            retry=spec,
            # The worker script alone, without `site` (its .pth files can cost tens of
            # milliseconds per start): the worker takes the parent's sys.path from the setup
            # file, and imports `site` only if the function cannot be found without it.
            worker_argv=[sys.executable, "-S", os.path.join(os.path.dirname(os.path.abspath(__file__)), "_worker.py")],
            # What to call travels with every record (the setup file's path), not in the
            # environment: the workers are kept for the next map with the same settings.
            worker_env=[("PYTHONPATH", pythonpath)],
            pickle_item=_dumps_item,
            cleanup=lambda: _unlink(path),
            setup_path=path,
        )
        return _native.start(fn, items, **kwargs)
    except BaseException:
        _unlink(path)
        raise


def _unlink(path):
    try:
        os.unlink(path)
    except OSError:
        pass


_TIMEOUT_MSG = "the item timed out; raise timeout (or deadline) if it needs more time"


def _convert(rec) -> Tuple[int, bool, Any, int, float]:
    """``(index, ok, value or exception, attempts, seconds)`` from a native outcome."""
    index, tag, payload, attempts, duration = rec
    if tag == "value":
        return index, True, payload, attempts, duration
    if tag == "pickled":
        return index, True, pickle.loads(payload), attempts, duration
    if tag == "raised":
        return index, False, payload, attempts, duration
    message, pickled = payload
    exc: BaseException
    if pickled is not None:
        try:
            exc, tb = pickle.loads(pickled)
            exc.__cause__ = RemoteTraceback(tb)
        except Exception as err:  # noqa: BLE001 - e.g. the exception's class cannot be imported here
            exc = HerdsmanError(f"the item failed in its worker, and its exception could not be read here: {err}")
    elif tag == "timeout":
        exc = ItemTimeout(message if message.startswith("the item") else f"{_TIMEOUT_MSG} ({message})")
    elif tag == "not_run":
        exc = NotRun(message)
    elif tag in ("worker_exited",):
        exc = WorkerCrashed(
            f"the worker process died while running item {index}: {message}. The other items "
            "went on in a new worker; look at the function for a crash (segfault, os._exit)"
        )
    elif tag == "panicked":
        exc = HerdsmanError(f"herdsman failed while running item {index}: {message}")
    else:
        exc = HerdsmanError(f"item {index} failed ({tag}): {message}")
    return index, False, exc, attempts, duration


def _is_interrupt(exc: BaseException) -> bool:
    return not isinstance(exc, Exception)


def _collect(run, ordered: bool, pickled: bool) -> MapResult:
    indices: List[int] = []
    vals: List[Any] = []
    failures: List[Failure] = []
    loads = pickle.loads

    def take(batch):
        idx, got, others = batch
        if pickled:
            got = list(map(loads, got))
        indices.extend(idx)
        vals.extend(got)
        for rec in others:
            index, ok, payload, attempts, duration = _convert(rec)
            if ok:  # pragma: no cover - successes come in the first two lists
                indices.append(index)
                vals.append(payload)
            else:
                failures.append(Failure(index, payload, attempts, duration))

    def result():
        nonlocal indices, vals
        if ordered and not run.in_order():
            pairs = sorted(zip(indices, vals), key=lambda p: p[0])
            indices = [i for i, _ in pairs]
            vals = [v for _, v in pairs]
        if ordered:
            failures.sort(key=lambda f: f.index)
        summary = run.summary() or {"status": "cancelled", "message": "interrupted"}
        return MapResult._columns(indices, vals, failures, summary)

    try:
        while True:
            batch = run.poll_split(65536, 0.05)
            if batch is None:
                break
            take(batch)
    except KeyboardInterrupt as interrupt:
        run.cancel()
        stop_by = time.monotonic() + 30.0
        try:
            while time.monotonic() < stop_by:
                batch = run.poll_split(65536, 0.05)
                if batch is None:
                    break
                take(batch)
        except KeyboardInterrupt:
            pass
        interrupt.partial = result()  # type: ignore[attr-defined]
        raise
    err = run.input_error()
    res = result()
    for f in res._failures:
        if _is_interrupt(f.exception):
            f.exception.partial = res  # type: ignore[attr-defined]
            raise f.exception
    if err is not None:
        raise err
    return res


def parallel_map(
    fn: Callable[[T], R],
    items: Iterable[T],
    *,
    workers: Optional[int] = None,
    executor: str = "thread",
    rate_limit: Union[int, "RateLimit", None] = None,
    batch_size: Optional[int] = None,
    retry: Optional[Retry] = None,
    timeout: Optional[float] = None,
    deadline: Optional[float] = None,
    max_errors: Optional[int] = None,
    ordered: bool = True,
    on_progress: Optional[Callable[[int, Optional[int]], None]] = None,
    progress: bool = False,
) -> MapResult[R]:
    """Apply ``fn`` to every item in parallel and return a :class:`MapResult`.

    - ``workers``: threads default to ``min(32, cpu_count + 4)``, processes to
      ``cpu_count()``; ``workers=1`` with threads runs every item on the calling thread,
      one after the other.
    - ``executor``: ``"thread"`` or ``"process"`` (persistent worker interpreters; ``fn``
      must be importable by module and name, or cloudpickle must be installed).
    - ``rate_limit``: a number (per second) or :class:`RateLimit`; one ``RateLimit`` may be
      shared by several maps and threads.
    - ``batch_size``: at most this many items taken from ``items`` and not yet finished
      (bounds memory on huge or endless iterables).
    - ``retry``: a :class:`Retry` policy.
    - ``timeout``: seconds one item may run (threads: the late result is discarded;
      processes: the worker's process group is killed and replaced).
    - ``deadline``: seconds for the whole run; unfinished items fail with :class:`ItemTimeout`
      or :class:`NotRun`, and ``status`` is ``"timed_out"``.
    - ``max_errors``: stop admitting items after this many failures (``status`` ``"aborted"``).
    - ``ordered``: results in input order (default) or completion order.
    - ``on_progress(done, total)``: called after each item finishes (``total`` is ``None``
      when ``items`` has no ``len``); ``progress=True`` prints a progress line to stderr.

    Ctrl-C stops the run: nothing new starts, worker processes are stopped, and the raised
    ``KeyboardInterrupt`` carries the partial result as ``.partial``.
    """
    on_progress = _progress_cb(on_progress, progress)
    run = _start(fn, items, executor=executor, workers=workers, rate_limit=rate_limit,
                 batch_size=batch_size, retry=retry, timeout=timeout, deadline=deadline,
                 max_errors=max_errors, ordered=ordered, on_progress=on_progress, inline_ok=True)
    res = _collect(run, ordered, pickled=executor == "process")
    if progress:
        sys.stderr.write("\n")
    return res


def _progress_cb(on_progress, progress):
    if not progress:
        return on_progress
    last = [0.0]

    def show(done, total):
        now = time.monotonic()
        if now - last[0] >= 0.1 or done == total:
            last[0] = now
            of = f"/{total}" if total is not None else ""
            sys.stderr.write(f"\rherdsman: {done}{of} items done")
            sys.stderr.flush()
        if on_progress is not None:
            on_progress(done, total)

    return show


def imap(
    fn: Callable[[T], R],
    items: Iterable[T],
    *,
    workers: Optional[int] = None,
    executor: str = "thread",
    rate_limit: Union[int, "RateLimit", None] = None,
    batch_size: Optional[int] = None,
    retry: Optional[Retry] = None,
    timeout: Optional[float] = None,
    deadline: Optional[float] = None,
    max_errors: Optional[int] = None,
    ordered: bool = True,
    on_progress: Optional[Callable[[int, Optional[int]], None]] = None,
) -> Iterator[Outcome[R]]:
    """Like :func:`parallel_map`, but yield each item's :class:`Outcome` as soon as it is
    final (in input order, or completion order with ``ordered=False``).

    ``items`` is consumed lazily: at most ``batch_size`` items (default 1024) are taken and
    not yet yielded, so an endless iterable works and memory stays bounded. Closing the
    iterator (or leaving the ``for`` loop) stops the run.
    """
    run = _start(fn, items, executor=executor, workers=workers, rate_limit=rate_limit,
                 batch_size=batch_size or 1024, retry=retry, timeout=timeout,
                 deadline=deadline, max_errors=max_errors, ordered=ordered,
                 on_progress=on_progress, inline_ok=False)
    return _imap_gen(run)


def _imap_gen(run):
    try:
        while True:
            batch = run.poll(64, 0.05)
            if batch is None:
                break
            for rec in batch:
                index, ok, payload, attempts, duration = _convert(rec)
                if ok:
                    yield Outcome(index, payload, None, attempts, duration)
                else:
                    if _is_interrupt(payload):
                        raise payload
                    yield Outcome(index, None, payload, attempts, duration)
        err = run.input_error()
        if err is not None:
            raise err
    finally:
        run.cancel()
        # Let the run wind down so worker processes are stopped before we return.
        stop_by = time.monotonic() + 30.0
        try:
            while time.monotonic() < stop_by and run.poll(4096, 0.05) is not None:
                pass
        except KeyboardInterrupt:
            pass


class _Parallel:
    def __init__(self, fn, options):
        self.__wrapped__ = fn
        self._options = options
        for attr in ("__module__", "__name__", "__qualname__", "__doc__"):
            try:
                setattr(self, attr, getattr(fn, attr))
            except AttributeError:
                pass

    def __call__(self, *args, **kwargs):
        return self.__wrapped__(*args, **kwargs)

    def map(self, items, **overrides) -> MapResult:
        """Run the function over ``items`` with the decorator's options (overridable)."""
        options = dict(self._options, **overrides)
        fn = self if options.get("executor") == "process" else self.__wrapped__
        return parallel_map(fn, items, **options)

    def imap(self, items, **overrides):
        """Stream outcomes over ``items`` with the decorator's options (see :func:`imap`)."""
        options = dict(self._options, **overrides)
        options.pop("progress", None)
        fn = self if options.get("executor") == "process" else self.__wrapped__
        return imap(fn, items, **options)

    def __reduce__(self):
        # Worker processes find the decorated object by module and name, as for a function.
        return self.__qualname__


def parallel(fn: Optional[Callable] = None, **options):
    """Decorator: ``fn(x)`` still calls the function; ``fn.map(items)`` runs
    :func:`parallel_map` with the decorator's options::

        @herdsman.parallel(workers=4)
        def double(x):
            return x * 2

        double(5) == 10
        list(double.map([1, 2, 3])) == [2, 4, 6]
    """
    if fn is not None and callable(fn) and not options:
        return _Parallel(fn, {})

    def wrap(f):
        return _Parallel(f, options)

    return wrap


# ---------------------------------------------------------------------------------------
# asyncio


async def map_async(
    fn: Callable[[T], Awaitable[R]],
    items: Union[Iterable[T], "AsyncIterator[T]"],
    *,
    concurrency: int = 64,
    rate_limit: Union[int, "RateLimit", None] = None,
    retry: Optional[Retry] = None,
    timeout: Optional[float] = None,
    deadline: Optional[float] = None,
    max_errors: Optional[int] = None,
    ordered: bool = True,
    on_progress: Optional[Callable[[int, Optional[int]], None]] = None,
) -> MapResult[R]:
    """Await ``fn(item)`` for every item, at most ``concurrency`` at once, in the running
    event loop; returns the same :class:`MapResult` as :func:`parallel_map`.

    ``items`` may be a plain or an async iterable; it is consumed lazily (an item is taken
    only when a slot is free). ``timeout`` cancels one attempt; ``deadline`` cancels the
    whole run (running items fail with :class:`ItemTimeout`, status ``"timed_out"``);
    ``rate_limit``, ``retry`` and ``max_errors`` mean what they mean for ``parallel_map``
    (a shared :class:`RateLimit` also throttles threads and other maps).
    """
    import asyncio

    if concurrency < 1:
        raise ValueError(f"concurrency={concurrency}: give at least 1")
    if retry is not None and not isinstance(retry, Retry):
        raise TypeError(f"retry={retry!r}: give herdsman.Retry(...)")
    limiter = _limiter(rate_limit)
    total: Optional[int] = None
    try:
        total = len(items)  # type: ignore[arg-type]
    except TypeError:
        pass
    if hasattr(items, "__aiter__"):
        source = items.__aiter__()  # type: ignore[union-attr]

        async def take():
            return await source.__anext__()
    else:
        plain = iter(items)  # type: ignore[arg-type]

        async def take():
            try:
                return next(plain)
            except StopIteration:
                raise StopAsyncIteration from None

    values: List[Tuple[int, Any]] = []
    failures: List[Failure] = []
    # "stopped": why the run stops early (aborted, timed_out); "exhausted": the input ended.
    state: Dict[str, Any] = {"next": 0, "stopped": None, "exhausted": False, "retries": 0}
    lock = asyncio.Lock()

    async def token():
        if limiter is None:
            return
        while True:
            wait = limiter.try_acquire()
            if wait == 0.0:
                return
            await asyncio.sleep(wait)

    async def one(index, item):
        attempts = 0
        started = time.monotonic()
        while True:
            attempts += 1
            await token()
            try:
                if timeout is not None:
                    try:
                        value = await asyncio.wait_for(fn(item), timeout)
                    except asyncio.TimeoutError:
                        raise ItemTimeout(_TIMEOUT_MSG) from None
                else:
                    value = await fn(item)
                values.append((index, value))
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - every failure is the item's
                wait = _retry_wait(retry, exc, attempts)
                if wait is None or state["stopped"]:
                    failures.append(Failure(index, exc, attempts, time.monotonic() - started))
                    if max_errors is not None and len(failures) >= max_errors:
                        state["stopped"] = state["stopped"] or "aborted"
                    return
                if limiter is not None and retry is not None and retry.retry_after is not None:
                    server = _server_wait(retry, exc)
                    if server is not None:
                        limiter.pause(server)
                state["retries"] += 1
                await asyncio.sleep(wait)

    async def worker():
        while not state["stopped"] and not state["exhausted"]:
            async with lock:
                if state["stopped"] or state["exhausted"]:
                    return
                try:
                    item = await take()
                except StopAsyncIteration:
                    state["exhausted"] = True
                    return
                index = state["next"]
                state["next"] += 1
            running[index] = time.monotonic()
            try:
                await one(index, item)
            finally:
                running.pop(index, None)
            if on_progress is not None:
                on_progress(len(values) + len(failures), total)

    running: Dict[int, float] = {}
    t0 = time.monotonic()
    tasks = [asyncio.ensure_future(worker()) for _ in range(concurrency)]
    try:
        if deadline is not None:
            done, pending = await asyncio.wait(tasks, timeout=deadline)
            if pending:
                state["stopped"] = "timed_out"
                unfinished = sorted(running.items())
                for t in pending:
                    t.cancel()
                await asyncio.gather(*pending, return_exceptions=True)
                now = time.monotonic()
                for index, since in unfinished:
                    failures.append(Failure(index, ItemTimeout(_TIMEOUT_MSG), 1, now - since))
        else:
            await asyncio.gather(*tasks)
    except BaseException:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
    for t in tasks:
        if not t.cancelled() and t.exception() is not None:
            raise t.exception()  # type: ignore[misc]
    if ordered:
        values.sort(key=lambda p: p[0])
        failures.sort(key=lambda f: f.index)
    status = state["stopped"] or "completed"
    summary = {
        "status": status,
        "message": "",
        "succeeded": len(values),
        "failed": len(failures),
        "not_run": 0,
        "retries": state["retries"],
        "admitted": state["next"],
        "elapsed": time.monotonic() - t0,
    }
    return MapResult(values, failures, summary)


def _server_wait(retry: Retry, exc: BaseException) -> Optional[float]:
    try:
        wait = retry.retry_after(exc)  # type: ignore[misc]
    except Exception:  # noqa: BLE001 - a failing extractor means no server wait
        return None
    return None if wait is None else max(0.0, float(wait))


def _retry_wait(retry: Optional[Retry], exc: BaseException, attempts: int) -> Optional[float]:
    """Seconds to wait before the next attempt, or None when the item fails for good."""
    if retry is None or attempts >= retry.attempts:
        return None
    if isinstance(exc, ItemTimeout) and not retry.retry_timeouts:
        return None
    if retry.on is not None and not isinstance(exc, retry.on):
        return None
    if retry.retry_after is not None:
        server = _server_wait(retry, exc)
        if server is not None:
            return server
    delay = retry.backoff * (2 ** (attempts - 1))
    if retry.max_delay is not None:
        delay = min(delay, retry.max_delay)
    if retry.jitter:
        delay = random.uniform(delay / 2, delay)
    return delay


# ---------------------------------------------------------------------------------------
# Dataset jobs


class JobResult:
    """What :func:`run` reports: the CLI's exit status (0 all records succeeded, 1 some
    failed) and its summary (``--summary-json``; empty when the job had already finished
    and nothing ran)."""

    def __init__(self, returncode: int, summary: Dict[str, Any], command: List[str]):
        self.returncode = returncode
        self.summary = summary
        self.command = command

    @property
    def ok(self) -> bool:
        """True when the job ran every record without a failure (exit status 0)."""
        return self.returncode == 0

    def __repr__(self) -> str:
        return f"<JobResult exit {self.returncode}: {self.summary}>"


def _herdsman_bin() -> str:
    import shutil

    found = os.environ.get("HERDSMAN_BIN") or shutil.which("herdsman")
    if not found:
        raise HerdsmanError(
            "herdsman.run needs the herdsman command-line program: install it "
            "(cargo install --path crates/herdsman-cli) or set HERDSMAN_BIN to its path"
        )
    return found


def _target(fn) -> str:
    module = getattr(fn, "__module__", None)
    qualname = getattr(fn, "__qualname__", None)
    if not module or not qualname or "<" in qualname:
        raise TypeError(
            f"herdsman.run sends {fn!r} to worker processes by module and name: define it with "
            "def at the top level of a module"
        )
    if module == "__main__":
        path = getattr(sys.modules.get("__main__"), "__file__", None)
        if not path:
            raise TypeError(f"{fn!r} is defined in an interactive session; define it in a file")
        return f"{os.path.abspath(path)}:{qualname}"
    return f"{module}:{qualname}"


def run(
    job: Optional[str] = None,
    *,
    input: Union[str, Sequence[str], None] = None,  # noqa: A002 - the CLI's name
    fn: Optional[Callable[[Any], Any]] = None,
    output: Optional[str] = None,
    executor: str = "process",
    workers: Optional[int] = None,
    failures: Optional[str] = None,
    **options: Any,
) -> JobResult:
    """Run a dataset job with the CLI's guarantees (checkpoint and exact resume, dead-letter
    file, accounting): ``herdsman.run(input="data.csv", fn=process_row, output="out.jsonl")``.

    This runs the ``herdsman`` program (``$HERDSMAN_BIN`` or on ``PATH``) with
    ``--protocol framed -w "python -m herdsman_worker module:function"``; ``fn`` gets each
    record as a dict and returns a dict (one output), ``None`` (filtered) or a list (one
    output per element), as ``herdsman_worker`` documents. ``job`` is a job file; every other
    keyword is the CLI option of the same name (``retries=3``, ``rate="10/second"``,
    ``timeout="30s"``, ``restart=True``). Returns a :class:`JobResult`; a job that could not
    run at all raises :class:`HerdsmanError` with the CLI's message.
    """
    if executor != "process":
        raise ValueError(
            f"executor={executor!r}: dataset jobs run on worker processes; use 'process'"
        )
    cmd = [_herdsman_bin(), "run"]
    if job is not None:
        cmd.append(os.fspath(job))
    for path in [input] if isinstance(input, (str, os.PathLike)) else (input or []):
        cmd += ["-i", os.fspath(path)]
    if output is not None:
        cmd += ["-o", os.fspath(output)]
    if failures is not None:
        cmd += ["--failures", os.fspath(failures)]
    if workers is not None:
        cmd += ["-j", str(workers)]
    if fn is not None:
        worker = [sys.executable, "-m", "herdsman_worker", _target(fn)]
        import shlex

        cmd += ["--protocol", "framed", "-w", shlex.join(worker)]
    for key, value in options.items():
        flag = "--" + key.replace("_", "-")
        if value is True:
            cmd.append(flag)
        elif value is False or value is None:
            continue
        else:
            cmd += [flag, str(value)]
    fd, summary_path = tempfile.mkstemp(prefix="herdsman-summary-", suffix=".json")
    os.close(fd)
    cmd += ["--summary-json", summary_path]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    try:
        proc = subprocess.run(cmd, env=env, stderr=subprocess.PIPE, text=True)
        sys.stderr.write(proc.stderr)
        summary: Dict[str, Any] = {}
        try:
            import json

            with open(summary_path) as f:
                text = f.read()
            if text.strip():
                summary = json.loads(text)
        except (OSError, ValueError):
            summary = {}
    finally:
        _unlink(summary_path)
    # Exit status 0: every record succeeded; 1: some records failed (see the failures file);
    # anything else (2 usage, 3 interrupted, 4 environment...): the job did not run through.
    if proc.returncode not in (0, 1):
        last = proc.stderr.strip().splitlines()[-1:] or [f"exit status {proc.returncode}"]
        raise HerdsmanError(
            f"the herdsman job stopped with exit status {proc.returncode}: {last[0]}"
        )
    return JobResult(proc.returncode, summary, cmd)
