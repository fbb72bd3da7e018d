"""The reference workload: count the primes <= value by naive trial division.

Shared by worker.py (the herdsman worker) and the baselines under bench/, so that every
implementation does exactly the same work. `compute` raises ValueError for a row whose id or
value is not an integer; callers report that row as a failure.
"""
import json
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


def integer_field(row: dict, name: str) -> int:
    """Read an integer that arrives as a string (CSV input) or a number (JSONL input)."""
    if name not in row:
        raise ValueError(f"row has no '{name}' column")
    text = row[name]
    if isinstance(text, int) and not isinstance(text, bool):
        return text
    try:
        return int(text.strip())
    except (AttributeError, ValueError):
        raise ValueError(f"{name} must be an integer, got {json.dumps(text)}") from None


def compute(row: dict) -> dict:
    """Turn a CSV row {"id": "3", "value": "17"} into the output record.

    Raises ValueError, with a message fit for the failures file, when id or value is missing
    or is not an integer."""
    ident = integer_field(row, "id")
    value = integer_field(row, "value")
    return {"id": ident, "value": value, "primes_up_to_value": count_primes(value)}
