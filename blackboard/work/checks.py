"""The one check of the work layer's durations (ttls, leases, delays): a number of seconds in range."""

from __future__ import annotations

from .. import InvalidValue


def check_seconds(what: str, value: float, low: float = 0.0) -> float:
    """`value` as a float if it is a number (not a bool) from `low` to 86400, else `InvalidValue`."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= 86400:
        raise InvalidValue(f"{what} is {low:g} to 86400 seconds, not {value!r}")
    return float(value)
