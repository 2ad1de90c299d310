"""Small file helpers shared by the stages: atomic writes, tables, hashes."""

from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd

#: A temporary sibling older than this is a leftover of a killed run, removed by the next.
STALE_SECONDS = 600


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling of ``path``; move it into place only if the block succeeds.

    Works for files and directories, so a failing stage never leaves a half-written output.
    An existing directory is renamed aside before the new one takes its name, and renamed back
    if that fails: deleting it first left a half-deleted directory (the previous export, still
    served) when the deletion failed or the process died in it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _sweep_stale(path)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent)) / path.name
    try:
        yield tmp
        if path.exists() and (tmp.is_dir() or (path.is_dir() and not path.is_symlink())):
            old = tmp.with_name(path.name + ".old")
            os.replace(path, old)
            try:
                os.replace(tmp, path)
            except BaseException:
                os.replace(old, path)
                raise
        else:
            os.replace(tmp, path)  # a file replaces a file in one step
    finally:
        shutil.rmtree(tmp.parent, ignore_errors=True)


def _sweep_stale(path: Path) -> None:
    """Remove what a killed run left of an earlier :func:`atomic_path` of ``path``."""
    now = time.time()
    prefix = f".{path.name}."
    for sibling in path.parent.glob(f".{glob.escape(path.name)}.*"):
        rest = sibling.name[len(prefix) :]
        if "." in rest or not sibling.is_dir():  # another output's temporary ("a.json" vs "a")
            continue
        try:
            if now - sibling.stat().st_mtime > STALE_SECONDS:
                shutil.rmtree(sibling, ignore_errors=True)
        except OSError:
            pass


def write_json(path: str | Path, payload: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(payload, indent=2, sort_keys=False, default=_jsonable) + "\n")


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())


def write_table(path: str | Path, frame: pd.DataFrame) -> None:
    with atomic_path(path) as tmp:
        frame.to_parquet(tmp, index=False)


def read_table(path: str | Path) -> pd.DataFrame:
    return pd.read_parquet(path)


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def invalidate_gate_report(
    json_path: Path, md_path: Path, model_name: str, run_id: str, reason: str
) -> None:
    """Replace the gate's verdict with "not judged": a new export makes the old verdict void.

    The export stage does this when it starts and again, with the reason, when it fails, so
    ``reports/gate.json`` never says "passed" while the model it judged is no longer what the
    pipeline produced. The shape is the gate's own (``passed`` false, one failed check named
    ``export``), so ``make register`` refuses it with the reason.
    """
    check = {
        "name": "export",
        "passed": False,
        "value": None,
        "threshold": None,
        "op": "==",
        "detail": reason,
    }
    write_json(
        json_path,
        {
            "passed": False,
            "invalidated": True,
            "model_name": model_name,
            "compared_with_champion": False,
            "champion_version": None,
            "note": reason,
            "checks": [check],
            "failed": ["export"],
            "candidate": {"run_id": run_id},
            "champion": None,
        },
    )
    with atomic_path(md_path) as tmp:
        tmp.write_text(f"# Model gate: NOT RUN\n\n{reason}\n")
