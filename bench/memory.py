"""Peak resident memory of a process tree, sampled in a thread (shared by the benchmarks)."""

from __future__ import annotations

import threading
import time
from typing import Self

import psutil

#: The process kinds :class:`TreePeak` sums separately, and their total.
KINDS = ("driver", "jvm", "python", "total")


class _Sampler:
    """Calls ``_sample`` every ``interval`` seconds in a thread while the ``with`` block runs."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        raise NotImplementedError

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            time.sleep(self.interval)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()  # what the tree holds at the end counts too


class PeakRss(_Sampler):
    """Samples the summed RSS of this process's children (and itself with ``include_self``);
    with ``python_only``, only Python processes (Spark's workers, not the JVM)."""

    def __init__(self, include_self: bool = True, python_only: bool = False, interval: float = 0.2) -> None:
        super().__init__(interval)
        self.peak = 0
        self.include_self = include_self
        self.python_only = python_only

    def _sample(self) -> None:
        me = psutil.Process()
        total = 0
        for p in ([me] if self.include_self else []) + me.children(recursive=True):
            try:
                if not self.python_only or "python" in p.name():
                    total += p.memory_info().rss
            except psutil.Error:
                continue
        self.peak = max(self.peak, total)


class TreePeak(_Sampler):
    """Peak RSS of a process and its descendants while it runs, summed per kind: the root process
    (``driver``), Java processes (``jvm``), every other descendant (``python``: Spark's workers,
    training ranks), and all together (``total``)."""

    def __init__(self, pid: int, interval: float = 0.25) -> None:
        super().__init__(interval)
        self.pid = pid
        self.peak = dict.fromkeys(KINDS, 0)

    def _sample(self) -> None:
        try:
            root = psutil.Process(self.pid)
            tree = [root, *root.children(recursive=True)]
        except psutil.Error:  # the process has ended
            return
        now = dict.fromkeys(KINDS, 0)
        for p in tree:
            try:
                rss = p.memory_info().rss
                kind = "driver" if p.pid == self.pid else ("jvm" if "java" in p.name() else "python")
            except psutil.Error:  # ended between the listing and the read
                continue
            now[kind] += rss
            now["total"] += rss
        for k in KINDS:
            self.peak[k] = max(self.peak[k], now[k])


def cpu_seconds() -> dict[str, float]:
    """CPU seconds (user + system) used so far by this process ("driver") and its children,
    summed by kind: "jvm" (Spark's JVM) and "python" (Spark's Python workers)."""
    me = psutil.Process()
    out = {"driver": 0.0, "jvm": 0.0, "python": 0.0}
    for p in [me, *me.children(recursive=True)]:
        try:
            times = p.cpu_times()
            kind = "driver" if p.pid == me.pid else ("jvm" if "java" in p.name() else "python")
        except psutil.Error:
            continue
        out[kind] += times.user + times.system
    return out
