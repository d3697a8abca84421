"""Functions run by spawned worker processes in the tests (importable by
name, so that a spawned interpreter finds them)."""

import os
import time

from memento import Memory


def _slow_square(x, counter_path):
    # One line per computation, whichever process runs it.
    with open(counter_path, "a") as f:
        f.write(f"{os.getpid()}\n")
    time.sleep(0.5)
    return x * x


def square_once(location, counter_path, barrier):
    """Waits for every worker, then calls the cached function."""
    memory = Memory(location, verbose=0)
    f = memory.cache(_slow_square, ignore=["counter_path"])
    barrier.wait()
    return f(7, counter_path)
