"""Paths named in code, docs and configuration (``bench/*.py``, ``docs/*.md``, ``conf/*.yaml``,
``scripts/*``) exist: a renamed file otherwise leaves readers a pointer to nothing. No Spark."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: Where such paths are written, relative to the repository root.
SCANNED = ("lib", "jobs", "dags", "notebooks", "docs", "conf", "README.md")
#: A path relative to the repository root: not the tail of a longer path (``x/docs/a.md``) or a
#: variable (``$conf/...``); placeholders such as ``conf/<env>.yaml`` do not match.
REFERENCE = re.compile(
    r"(?<![\w/.$-])(bench/[\w.-]+\.py|docs/[\w.-]+\.md|conf/[\w.-]+\.yaml|scripts/[\w.-]*\w)"
)


def _texts() -> list[Path]:
    files: list[Path] = []
    for name in SCANNED:
        path = ROOT / name
        files += [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return [f for f in files if "__pycache__" not in f.parts]


def references(text: str) -> list[str]:
    return REFERENCE.findall(text)


def test_the_pattern_finds_paths_and_skips_placeholders_and_longer_paths() -> None:
    text = (
        "see ``bench/loader.py`` and docs/airflow.md, run scripts/setup.sh. Copy conf/<env>.yaml "
        "or conf/local.yaml; not /dbfs/x/conf/a.yaml, tests/docs/b.md or $root/scripts/c"
    )
    assert references(text) == ["bench/loader.py", "docs/airflow.md", "scripts/setup.sh", "conf/local.yaml"]


def test_every_referenced_path_exists() -> None:
    found: dict[str, set[str]] = {}
    for file in _texts():
        try:
            text = file.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue  # not text
        for ref in references(text):
            found.setdefault(ref, set()).add(str(file.relative_to(ROOT)))
    assert len(found) >= 5, f"the scan found almost nothing ({sorted(found)}): is the pattern broken?"
    missing = {ref: sorted(where) for ref, where in found.items() if not (ROOT / ref).exists()}
    assert not missing, "paths named but absent (rename the mention or restore the file): " + "; ".join(
        f"{ref} in {', '.join(where)}" for ref, where in sorted(missing.items())
    )
