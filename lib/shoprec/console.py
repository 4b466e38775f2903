"""What a person sees on the console, and where the rest goes.

By default the console shows one line when each stage starts and one when it ends (what it read
and wrote, and how long it took), warnings and errors, and nothing else; every INFO record goes
to the run's log file (``paths.logs``), with the full configuration beside it. ``-v`` puts
everything on the console too.

Library output that carries no action for the user is quietened at its source, here, each with
its reason (:func:`quiet_libraries`).
"""

from __future__ import annotations

import logging
import os
import sys
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

#: The logger whose INFO records reach the console: the stages' start and end lines.
CONSOLE = "shoprec.console"
console = logging.getLogger(CONSOLE)
FILE_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_MARK = "_shoprec_handler"


class _ConsoleFilter(logging.Filter):
    """Stage lines, warnings and errors; the rest stays in the log file."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or record.name == CONSOLE


class _ConsoleFormatter(logging.Formatter):
    """Stage lines as they are; anything else with its level and logger, so a warning says where
    it comes from."""

    def format(self, record: logging.LogRecord) -> str:
        if record.name == CONSOLE and record.levelno == logging.INFO:
            return record.getMessage()
        return f"{record.levelname} {record.name}: {record.getMessage()}"


def configure(verbose: bool = False) -> None:
    """Console logging for a shoprec process (the CLI, a job, a notebook): quiet by default.

    Idempotent: a second call (a notebook running several stages) switches the mode and points the
    handler at the current ``sys.stderr``; other handlers a platform installed stay as they are."""
    quiet_libraries(verbose)
    root = logging.getLogger()
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    for old in [h for h in root.handlers if getattr(h, _MARK, False) == "console"]:
        root.removeHandler(old)  # its stream may be gone (a notebook cell, a test's capture)
    handler = logging.StreamHandler(sys.stderr)
    setattr(handler, _MARK, "console")
    _console_mode(handler, verbose)
    root.addHandler(handler)


def _console_mode(handler: logging.Handler, verbose: bool) -> None:
    if verbose:
        handler.setFormatter(logging.Formatter(FILE_FORMAT))
    else:
        handler.addFilter(_ConsoleFilter())
        handler.setFormatter(_ConsoleFormatter())


def log_to_file(directory: Path, name: str, config_yaml: str) -> tuple[Path, Path]:
    """Send every record of this process to ``directory/<name>-<UTC time>.log`` and write the
    resolved configuration beside it; both paths are returned for the one line that names them."""
    directory.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    log_file = directory / f"{name}-{stamp}.log"
    config_file = directory / f"{name}-{stamp}.config.yaml"
    config_file.write_text(config_yaml)
    root = logging.getLogger()
    for h in [h for h in root.handlers if getattr(h, _MARK, False) == "file"]:
        root.removeHandler(h)
        h.close()
    handler = logging.FileHandler(log_file, encoding="utf-8")
    setattr(handler, _MARK, "file")
    handler.setFormatter(logging.Formatter(FILE_FORMAT))
    root.addHandler(handler)
    return log_file, config_file


def quiet_libraries(verbose: bool = False) -> None:
    """Quieten library output that carries no action for the user, at its source.

    Environment variables reach the processes this one starts (Spark's Python workers in local
    mode, Horovod's ranks); where a library is loaded in a task on a cluster, the loading code
    calls :func:`quiet_transformers` itself."""
    # py4j logs a traceback at INFO each time the JVM side closes a callback connection
    # (ConnectionResetError ... Py4JNetworkError): the normal end of a gateway call, not a crash.
    logging.getLogger("py4j").setLevel(logging.INFO if verbose else logging.WARNING)
    # transformers draws a "Loading weights" bar in every task that loads a model, and warns
    # about unused weights of a checkpoint loaded for embeddings only (e.g. a pooler).
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if not verbose:
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        # MLflow installs its own INFO handler on import ("Creating initial MLflow database tables")
        os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    # fsspec, urllib3 and matplotlib's font manager log their internals at INFO/DEBUG.
    for name in ("urllib3", "fsspec", "filelock", "matplotlib", "PIL"):
        logging.getLogger(name).setLevel(logging.WARNING)
    quiet_petastorm()


def quiet_petastorm() -> None:
    """Petastorm 0.13 uses pyarrow's legacy dataset API, and pyarrow says so with a FutureWarning
    from every rank at every read: the lane without Petastorm is the fix, not the user's job."""
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"petastorm")
    # Petastorm's torch loader hands read-only numpy arrays to torch, which says so once per rank;
    # the batches are never written to
    warnings.filterwarnings("ignore", category=UserWarning, message=r"The given NumPy array is not writable")
    warnings.filterwarnings(
        "ignore", category=FutureWarning, message=r".*pyarrow\.(parquet\.)?ParquetDataset"
    )


def quiet_transformers() -> None:
    """No weight-loading bar from a task or a rank that loads a model (see :func:`quiet_libraries`)."""
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:  # pragma: no cover - transformers is a dependency
        return
    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]


@dataclass
class Stage:
    """A stage's end line: what it read and wrote, filled in by the stage."""

    name: str
    summary: str = ""


@contextmanager
def stage(name: str) -> Iterator[Stage]:
    """One console line when ``name`` starts and one when it ends (its summary and seconds); a
    stage that fails prints no end line: the error says what happened."""
    line = Stage(name)
    console.info("%-10s started", name)
    started = time.perf_counter()
    yield line
    seconds = time.perf_counter() - started
    console.info("%-10s %s (%.0f s)", name, line.summary or "done", seconds)
