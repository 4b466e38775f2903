"""The whole pipeline at several multiples of the demo, each stage as the CLI runs it, with its time
and peak memory, against a plain Spark read → write of the same raw events in the same run.

For each scale (``generator.scale``: users and items both multiply; 1× is the demo's 2,000 users
and 600 items, about 75k events) the stages run one after another as ``shoprec <stage> --env local``
subprocesses on a fresh lake: generate → ingest → clean → features → train → score → evaluate.
Training is capped (``--train-examples`` examples, one epoch, so its cost is the data it reads and
tokenises plus a fixed fine-tune); the other stages take every row. While a stage runs, its
process tree is sampled: the peak resident memory of the driver (the ``shoprec`` process), the JVM
and the Python workers (Spark's, Horovod's ranks) each, and of all together.

The baseline, run on each scale's raw events before the pipeline: ``spark.read.schema(raw
contract).json(...)`` then ``.write.parquet(...)`` in a subprocess of its own, so it pays the same
JVM start as a stage. Printed: the stage table (seconds and peak MiB per scale), each stage's time
and peak memory at each scale over the previous scale's (goals: time ≤ 1.1× the data ratio, so
≤ 11× for 10×; memory ≤ 1.5×), and ingest + clean + features over the plain copy (goal ≤ 2.0×).

    SHOPREC_PSEUDONYM_KEY=bench .venv/bin/python bench/pipeline_scale.py --scales 1 10 100
    .venv/bin/python bench/pipeline_scale.py --scales 1 --stages generate ingest clean features
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from memory import TreePeak

log = logging.getLogger("pipeline_scale")
STAGES = ("generate", "ingest", "clean", "features", "train", "score", "evaluate")
ETL = ("ingest", "clean", "features")
MIB = 2**20


@dataclass
class Measured:
    seconds: float
    peak_mib: dict[str, float]


@dataclass
class ScaleRun:
    scale: float
    events: int = 0
    copy: Measured | None = None
    stages: dict[str, Measured] = field(default_factory=dict)


def _run(cmd: list[str], env: dict[str, str], log_file: Path) -> Measured:
    """Run ``cmd`` to the end, sampling its process tree; a failure stops the benchmark, naming
    the log that holds its output."""
    started = time.perf_counter()
    with log_file.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
        with TreePeak(proc.pid) as peak:
            rc = proc.wait()
    seconds = time.perf_counter() - started
    if rc != 0:
        raise SystemExit(f"pipeline_scale: {' '.join(cmd[:3])} exited {rc}; its output is in {log_file}")
    return Measured(seconds, {k: v / MIB for k, v in peak.peak.items()})


def _plain_copy(source: str, target: str) -> None:
    """The baseline, in this (sub)process: the raw JSON read with the contract's schema, written
    as Parquet."""
    from shoprec import schemas as S
    from shoprec.config import from_dict
    from shoprec.spark import get_spark

    spark = get_spark(from_dict({}).spark)
    spark.read.schema(S.RAW_EVENT_SCHEMA).json(source).write.mode("overwrite").parquet(target)
    spark.stop()


def run_scale(scale: float, stages: list[str], args: argparse.Namespace, work: Path) -> ScaleRun:
    root = work / f"scale-{scale:g}"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    env = {**os.environ, "SHOPREC_PSEUDONYM_KEY": os.environ.get("SHOPREC_PSEUDONYM_KEY", "bench-key")}
    shoprec = str(Path(sys.executable).with_name("shoprec"))
    sets = [
        f"paths.root={root / 'lake'}",
        f"generator.scale={scale:g}",
        f"training.max_examples={args.train_examples}",
        "training.epochs=1",
    ]
    overrides = [a for s in sets + args.set for a in ("--set", s)]
    out = ScaleRun(scale)
    for stage in stages:
        if stage == "ingest" and out.copy is None:
            raw = root / "lake" / "raw" / "events"
            out.copy = _run(
                [sys.executable, __file__, "--plain-copy", str(raw), str(root / "copy")],
                env,
                root / "copy.log",
            )
            log.info("%gx plain copy: %.1f s", scale, out.copy.seconds)
        out.stages[stage] = _run([shoprec, stage, "--env", "local", *overrides], env, root / f"{stage}.log")
        log.info("%gx %s: %.1f s", scale, stage, out.stages[stage].seconds)
        if stage == "generate":
            out.events = _generated_events(root / "generate.log")
    if not args.keep:
        shutil.rmtree(root / "lake", ignore_errors=True)
    return out


def _generated_events(log_file: Path) -> int:
    """The event count ``shoprec generate`` reports (its last line naming events)."""
    import re

    found = re.findall(r": ([\d,]+) events, ", log_file.read_text())
    return int(found[-1].replace(",", "")) if found else 0


def report(runs: list[ScaleRun]) -> str:
    """The tables, as Markdown."""
    lines = ["| stage | " + " | ".join(f"{r.scale:g}× s | {r.scale:g}× peak MiB" for r in runs) + " |"]
    lines.append("|---|" + "---|---|" * len(runs))
    names = ["plain copy"] + [s for s in STAGES if any(s in r.stages for r in runs)]
    for name in names:
        cells = []
        for r in runs:
            m = r.copy if name == "plain copy" else r.stages.get(name)
            cells += [f"{m.seconds:.1f}", f"{m.peak_mib['total']:.0f}"] if m else ["", ""]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("events: " + ", ".join(f"{r.scale:g}× {r.events:,}" for r in runs))
    lines.append("")
    lines.append("peak MiB by process kind (driver / JVM / Python workers):")
    for r in runs:
        for name, m in r.stages.items():
            p = m.peak_mib
            lines.append(f"  {r.scale:g}× {name}: {p['driver']:.0f} / {p['jvm']:.0f} / {p['python']:.0f}")
    for prev, cur in itertools.pairwise(runs):
        data = cur.events / prev.events if prev.events else cur.scale / prev.scale
        lines.append("")
        lines.append(
            f"{cur.scale:g}× over {prev.scale:g}× (events {data:.2f}×): time ratio, peak memory ratio"
        )
        for name, m in cur.stages.items():
            before = prev.stages.get(name)
            if before:
                t = m.seconds / before.seconds
                mem = m.peak_mib["total"] / before.peak_mib["total"]
                ok = "ok" if t <= 1.1 * data and mem <= 1.5 else "OVER"
                lines.append(f"  {name}: {t:.2f}× time, {mem:.2f}× memory [{ok}]")
    lines.append("")
    for r in runs:
        if r.copy and all(s in r.stages for s in ETL):
            etl = sum(r.stages[s].seconds for s in ETL)
            verdict = "ok" if etl <= 2.0 * r.copy.seconds else "OVER"
            lines.append(
                f"{r.scale:g}×: ingest + clean + features {etl:.1f} s over the plain copy "
                f"{r.copy.seconds:.1f} s: {etl / r.copy.seconds:.2f}× (goal ≤ 2.0×) [{verdict}]"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scales", type=float, nargs="+", default=[1, 10])
    parser.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES))
    parser.add_argument(
        "--train-examples", type=int, default=2000, help="training.max_examples at every scale"
    )
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="more overrides")
    parser.add_argument("--work", default=None, help="where the lakes go (default: a temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep each scale's lake")
    parser.add_argument("--out", default=None, help="also write the measurements as JSON here")
    parser.add_argument("--plain-copy", nargs=2, metavar=("SOURCE", "TARGET"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.plain_copy:
        _plain_copy(*args.plain_copy)
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if "generate" not in args.stages:
        raise SystemExit("pipeline_scale: the stages start from generate (each scale makes its own data)")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work or tmp)
        runs = [run_scale(scale, args.stages, args, work) for scale in args.scales]
    text = report(runs)
    print(text)
    if args.out:
        Path(args.out).write_text(json.dumps([asdict(r) for r in runs], indent=2))


if __name__ == "__main__":
    main()
