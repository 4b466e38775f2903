"""A real single-node Kafka broker (KRaft: broker and controller in one JVM) on loopback, started
from Kafka's own jars. The jars are resolved from Maven Central once, with the Ivy that ships inside
pyspark, into the cache outside the checkout."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pyspark

VERSION = "4.1.1"
#: What the broker runs; kafka_2.13 pulls in the server, raft, storage and Scala.
ARTIFACT = ("org.apache.kafka", "kafka_2.13", VERSION)


def _cache() -> Path:
    return Path(os.environ.get("SHOPREC_CACHE", Path.home() / ".cache" / "shoprec")) / f"kafka-{VERSION}"


def jars() -> Path:
    """The folder holding the broker's jars (resolved on first use)."""
    lib = _cache() / "lib"
    done = _cache() / ".complete"
    if done.is_file():
        return lib
    ivy = next((Path(pyspark.__file__).parent / "jars").glob("ivy-*.jar"))
    lib.mkdir(parents=True, exist_ok=True)
    group, name, version = ARTIFACT
    subprocess.run(
        ["java", "-jar", str(ivy), "-dependency", group, name, version, "-confs", "default",
         "-retrieve", f"{lib}/[artifact]-[revision](-[classifier]).[ext]", "-cache", str(_cache() / "ivy")],
        check=True, capture_output=True, timeout=900,
    )  # fmt: skip
    done.write_text("ok\n")
    return lib


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def broker(work: Path) -> Iterator[str]:
    """Start a broker with its data under ``work``; yields ``host:port``; stops it on exit."""
    lib = jars()
    port, controller = _free_port(), _free_port()
    work.mkdir(parents=True, exist_ok=True)
    props = work / "server.properties"
    props.write_text(
        "\n".join(
            [
                "process.roles=broker,controller",
                "node.id=1",
                f"controller.quorum.voters=1@127.0.0.1:{controller}",
                f"listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller}",
                f"advertised.listeners=PLAINTEXT://127.0.0.1:{port}",
                "controller.listener.names=CONTROLLER",
                "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
                f"log.dirs={work / 'data'}",
                "offsets.topic.replication.factor=1",
                "transaction.state.log.replication.factor=1",
                "transaction.state.log.min.isr=1",
                "num.partitions=2",
                "group.initial.rebalance.delay.ms=0",
            ]
        )
        + "\n"
    )
    cp = f"{lib}/*"
    tool = ["java", "-cp", cp, "kafka.tools.StorageTool"]
    made = subprocess.run([*tool, "random-uuid"], capture_output=True, text=True, check=True)
    cluster = made.stdout.split()[-1]
    subprocess.run(
        [*tool, "format", "-t", cluster, "-c", str(props)],
        capture_output=True, check=True,
    )  # fmt: skip
    log = (work / "broker.log").open("wb")
    proc = subprocess.Popen(
        ["java", "-Xmx512m", "-cp", cp, "kafka.Kafka", str(props)], stdout=log, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 120
        while True:  # the broker is up when its listener accepts a connection
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"Kafka broker did not start: see {work / 'broker.log'}") from None
                time.sleep(0.2)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
