"""The reference workload: count the primes <= value by naive trial division.

Shared by worker.py (the herdsman worker) and the baselines under bench/, so that every
implementation does exactly the same work. `compute` raises ValueError for a row whose id or
value is not an integer; callers report that row as a failure.
"""
import math


def is_prime(n: int) -> bool:
    if n <= 1:
        return False
    if n <= 3:
        return True
    if n % 2 == 0:
        return False
    for i in range(3, math.isqrt(n) + 1, 2):
        if n % i == 0:
            return False
    return True


def count_primes(x: int) -> int:
    """Number of primes <= x, the deliberately CPU-heavy way."""
    return sum(1 for n in range(2, x + 1) if is_prime(n))


def compute(row: dict) -> dict:
    """Turn a CSV row {"id": "3", "value": "17"} into the output record."""
    try:
        ident = int(row["id"])
        value = int(row["value"])
    except KeyError as missing:
        raise ValueError(f"row has no {missing} column") from None
    except (TypeError, ValueError):
        raise ValueError(
            f"id and value must be integers, got id={row.get('id')!r} value={row.get('value')!r}"
        ) from None
    return {"id": ident, "value": value, "primes_up_to_value": count_primes(value)}
