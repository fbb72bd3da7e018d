"""Type stubs of the native half of the herdsman package (use ``herdsman`` instead)."""
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

class RateLimit:
    """A rate limiter shared by every map (and thread) it is given to."""

    def __init__(self, count: int, per: str = "second", burst: Optional[int] = None) -> None: ...
    @property
    def count(self) -> int: ...
    @property
    def per(self) -> str: ...
    @property
    def burst(self) -> int: ...
    def acquire(self) -> None: ...
    def try_acquire(self) -> float: ...
    def pause(self, seconds: float) -> None: ...
    def paused_for(self) -> float: ...

class Run:
    def poll(self, max: int, timeout: float) -> Optional[List[Tuple[int, str, Any, int, float]]]: ...
    def cancel(self) -> None: ...
    def summary(self) -> Optional[Dict[str, Any]]: ...
    def input_error(self) -> Optional[BaseException]: ...

def cpu_count() -> int: ...
def start(
    fn_: Callable[[Any], Any],
    items: Iterable[Any],
    *,
    executor: str,
    workers: int,
    sequential: bool,
    ordered: bool,
    window: Optional[int],
    limiter: Optional[RateLimit],
    retry: Optional[Dict[str, Any]],
    timeout: Optional[float],
    deadline: Optional[float],
    max_errors: Optional[int],
    total: Optional[int],
    on_progress: Optional[Callable[[int, Optional[int]], None]],
    worker_argv: Sequence[str],
    worker_env: Sequence[Tuple[str, str]],
    pickle_item: Optional[Callable[[Any], bytes]],
    pipeline_depth: Optional[int],
    cleanup: Optional[Callable[[], None]],
    inline: bool = False,
) -> Run: ...
