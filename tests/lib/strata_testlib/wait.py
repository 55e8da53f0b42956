"""Polling with a deadline."""

from __future__ import annotations

import time


def wait_for(cond, timeout: float, what, every: float = 0.2, ignore: tuple = ()):
    """Poll cond() every `every` seconds until it returns something truthy, and return that;
    after `timeout` seconds raise AssertionError naming `what` (a string, or a callable that
    makes one, evaluated only then). cond() is always tried once more at the deadline.

    Exceptions of the types in `ignore` count as "not yet"; the last one is quoted on timeout.
    """
    deadline = time.monotonic() + timeout
    last_exc = None
    while True:
        try:
            v = cond()
            if v:
                return v
        except ignore as e:
            last_exc = e
        if time.monotonic() >= deadline:
            what = what() if callable(what) else what
            extra = f" (last error: {last_exc})" if last_exc else ""
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}{extra}")
        time.sleep(every)
