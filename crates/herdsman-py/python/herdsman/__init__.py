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
items. Every item ends exactly once as a success or a failure. See docs/python.md.
"""

import asyncio
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

__all__ = [
    "parallel_map",
    "imap",
    "parallel",
    "map_async",
    "run",
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
        self._values = values
        self._failures = failures
        self._summary = summary

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
        return list(self)

    def _group(self) -> BaseException:
        excs = [f.exception for f in self._failures]
        n = len(excs)
        return ExceptionGroup(
            f"{n} of {n + len(self._values)} items failed (first: item {self._failures[0].index}); "
            "see result.failures() for each index and exception",
            excs,
        )

    def __iter__(self) -> Iterator[R]:
        if not self._failures:
            for _, v in self._values:
                yield v
            if self.status != "completed":
                raise ExceptionGroup(
                    f"the run ended early ({self.status}) before every item ran",
                    [HerdsmanError(self._summary.get("message") or self.status)],
                )
            return
        first = min(f.index for f in self._failures)
        for i, v in self._values:
            if i > first:
                break
            yield v
        raise self._group()

    def __len__(self) -> int:
        return len(self._values) + len(self._failures)

    def __repr__(self) -> str:
        return (
            f"<MapResult {self.status}: {len(self._values)} succeeded, "
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


def _dumps_item(item) -> bytes:
    return pickle.dumps(item, protocol=pickle.HIGHEST_PROTOCOL)


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
            worker_argv=[sys.executable, "-m", "herdsman._worker"],
            worker_env=[("HERDSMAN_PY_SETUP", path), ("PYTHONPATH", pythonpath)],
            pickle_item=_dumps_item,
            cleanup=lambda: _unlink(path),
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


def _collect(run, ordered: bool) -> MapResult:
    values: List[Tuple[int, Any]] = []
    failures: List[Failure] = []

    def take(batch):
        for rec in batch:
            index, ok, payload, attempts, duration = _convert(rec)
            if ok:
                values.append((index, payload))
            else:
                failures.append(Failure(index, payload, attempts, duration))

    def result():
        if ordered:
            values.sort(key=lambda p: p[0])
            failures.sort(key=lambda f: f.index)
        summary = run.summary() or {"status": "cancelled", "message": "interrupted"}
        return MapResult(values, failures, summary)

    try:
        while True:
            batch = run.poll(4096, 0.05)
            if batch is None:
                break
            take(batch)
    except KeyboardInterrupt as interrupt:
        run.cancel()
        stop_by = time.monotonic() + 30.0
        try:
            while time.monotonic() < stop_by:
                batch = run.poll(4096, 0.05)
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
    res = _collect(run, ordered)
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
