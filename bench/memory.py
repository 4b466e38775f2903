"""Peak resident memory of a process tree, sampled in a thread (shared by the benchmarks)."""

from __future__ import annotations

import threading
import time

import psutil


class PeakRss:
    """Samples the summed RSS of this process's children (and itself with ``include_self``);
    with ``python_only``, only Python processes (Spark's workers, not the JVM)."""

    def __init__(self, include_self: bool = True, python_only: bool = False, interval: float = 0.2) -> None:
        self.peak = 0
        self.include_self = include_self
        self.python_only = python_only
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            total = 0
            for p in ([me] if self.include_self else []) + me.children(recursive=True):
                try:
                    if not self.python_only or "python" in p.name():
                        total += p.memory_info().rss
                except psutil.Error:
                    continue
            self.peak = max(self.peak, total)
            time.sleep(self.interval)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


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
