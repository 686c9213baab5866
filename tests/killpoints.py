"""Kill a function at every file operation it makes, one run per operation, and look at what is left.

`file_ops(fn)` runs `fn()` once and counts the file operations it makes (rename/replace, unlink, fsync,
mkdir, rmdir, opening a file for writing). `kill_at_each_file_op(fn)` then, for k = 0 .. count, forks a
child that runs `fn()` and dies with `os._exit(137)` (no `finally`, no cleanup: what a SIGKILL or a power
cut leaves) just before operation k (k == count: it completes). After each child the caller checks the
folder: old or new state must load. Deterministic, every operation covered, not random.
"""

from __future__ import annotations

import builtins
import contextlib
import os
import shutil
from typing import Callable, Iterator

_NAMES = ("replace", "rename", "unlink", "remove", "rmdir", "mkdir", "fsync")


@contextlib.contextmanager
def _counting(on_op: Callable[[str], None]) -> Iterator[None]:
    saved = {n: getattr(os, n) for n in _NAMES}
    saved_open, saved_rmtree = builtins.open, shutil.rmtree

    def wrap(name: str, fn: Callable) -> Callable:
        def hooked(*a, **k):
            on_op(name)
            return fn(*a, **k)
        return hooked

    def hooked_open(file, mode="r", *a, **k):
        if any(c in mode for c in "wax+"):
            on_op("open-write")
        return saved_open(file, mode, *a, **k)

    for n, fn in saved.items():
        setattr(os, n, wrap(n, fn))
    builtins.open, shutil.rmtree = hooked_open, wrap("rmtree", saved_rmtree)
    try:
        yield
    finally:
        for n, fn in saved.items():
            setattr(os, n, fn)
        builtins.open, shutil.rmtree = saved_open, saved_rmtree


def file_ops(fn: Callable[[], object]) -> list[str]:
    """The file operations `fn()` makes, in order (it runs for real)."""
    ops: list[str] = []
    with _counting(ops.append):
        fn()
    return ops


def kill_at_each_file_op(fn: Callable[[], object], count: int) -> Iterator[int]:
    """For k in 0..count: fork, run `fn()` in the child and `os._exit(137)` before file op k; yields k after the
    child is gone. `count` comes from `file_ops` on an identical run."""
    for k in range(count + 1):
        pid = os.fork()
        if pid == 0:  # child: die before op k, exactly as a kill would (no cleanup runs)
            seen = [0]

            def on_op(_name: str) -> None:
                if seen[0] == k:
                    os._exit(137)
                seen[0] += 1

            try:
                with _counting(on_op):
                    fn()
            except BaseException:
                os._exit(1)
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        code = os.waitstatus_to_exitcode(status)
        assert code in (0, 137), f"child failed (exit {code}) before kill point {k}"
        assert (code == 0) == (k == count), f"kill point {k} of {count}: exit {code}"
        yield k
