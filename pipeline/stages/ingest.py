"""``ingest``: read ``data.source`` and write the raw table, unchanged, as Parquet.

``dvc.yaml`` runs this stage on every ``dvc repro`` (``always_changed``): ``data.source`` may be
a local file, a URL or a packaged dataset, and only reading it tells whether its content
changed. The output is rewritten only when the table's bytes differ from the ones already
there, so an unchanged source leaves ``data/raw/dataset.parquet`` untouched and DVC skips every
later stage; a changed one reruns the pipeline from ``validate``.

So that the common case costs almost nothing, a run that wrote or checked the output leaves a
stamp in DVC's private ``.dvc/tmp/`` (the source's inode, size, modification and change times,
or the version of the package a built-in dataset ships in, and the output's SHA-256). The next
run compares the stamp before importing pandas: when the source file is exactly as it was and
the output still holds the bytes written from it, it stops there. Any write to the source
changes its change time (which no tool can set back), so a changed file is always read; URLs
are always read.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.errors import cli

if TYPE_CHECKING:
    import pandas as pd

#: Bumped when the stamp's meaning changes, so an old stamp is never trusted.
STAMP_VERSION = 2


def write_if_changed(path: str | Path, frame: pd.DataFrame) -> bool:
    """Write ``frame`` to ``path`` as Parquet unless the file there already holds these bytes.

    Returns whether the file was (re)written. The write is atomic: a temporary sibling is
    written, compared, and either moved into place or removed, so the old file's timestamp and
    content stay as they were when nothing changed.
    """
    from pipeline.io import file_sha256

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        frame.to_parquet(tmp, index=False)
        if path.is_file() and file_sha256(path) == file_sha256(tmp):
            return False
        os.replace(tmp, path)
        return True
    finally:
        tmp.unlink(missing_ok=True)


@cli("ingest")
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", required=True, help="params.yaml")
    parser.add_argument("--out", required=True, help="raw table to write (Parquet)")
    args = parser.parse_args(argv)

    source, reading = _declared_source(args.params)
    stamp_path = _stamp_path(args.out)
    fingerprint = source_fingerprint(source) if source is not None else None
    if fingerprint is not None and stamp_path is not None:
        stamp = _read_stamp(stamp_path)
        if stamp is not None and stamp == _stamp(source, fingerprint, args.out, reading):
            print(f"ingest: {source} is unchanged (as in the last run); {args.out} left as it was")
            return

    from pipeline.config import load_params
    from pipeline.sources import ingest

    params = load_params(args.params)
    frame = ingest(params.data.source, **params.data.read_options())
    shape = f"{len(frame)} rows x {len(frame.columns)} columns"
    if write_if_changed(args.out, frame):
        print(f"ingest: {shape} -> {args.out}")
    else:
        # The same table, from this source or another one (a CSV and its Parquet copy).
        print(
            f"ingest: the table is unchanged: {params.data.source} holds what {args.out} "
            f"already has ({shape}); left as it was"
        )
    if stamp_path is not None:
        fingerprint = source_fingerprint(params.data.source)
        _write_stamp(stamp_path, _stamp(params.data.source, fingerprint, args.out, reading))


# ---------------------------------------------------------------------- the stamp
def _stat_key(path: str | Path) -> list[int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def _sha256(path: str | Path) -> str | None:
    """The file's SHA-256 (DVC replaces the output by its cached copy, so its inode and times
    change after every run; its bytes do not)."""
    import hashlib

    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    except OSError:
        return None
    return digest.hexdigest()


def source_fingerprint(source: str) -> Any:
    """What identifies the source's content without reading it, or None (a URL: always read).

    A local file: its inode, size, modification and change times. A built-in dataset: the name
    and version of the package it ships in."""
    if source.startswith("builtin:"):
        from importlib.metadata import PackageNotFoundError, version

        from pipeline.sources import BUILTIN_PACKAGES

        package = BUILTIN_PACKAGES.get(source.removeprefix("builtin:"))
        if package is None:
            return None
        try:
            return [package, version(package)]
        except PackageNotFoundError:
            return None
    if "://" in source:
        return None
    return _stat_key(source)


def _stamp(source: str, fingerprint: Any, out: str | Path, reading: Any) -> dict[str, Any] | None:
    if fingerprint is None:
        return None
    out_key = _sha256(out)
    if out_key is None:
        return None
    return {
        "version": STAMP_VERSION,
        "source": source,
        "source_file": str(Path(source).resolve()) if not source.startswith("builtin:") else None,
        "fingerprint": fingerprint,
        "reading": reading,
        "out": str(Path(out).resolve()),
        "out_sha256": out_key,
    }


def _declared_source(params_path: str) -> tuple[str | None, Any]:
    """``data.source`` and how it is read (``data``'s other keys but the contract), read
    without the params machinery (which imports the estimators). A changed reading setting
    (``data.missing_values``, ``decimal``, ``thousands``, ``encoding``) means reading the
    source again."""
    import yaml

    try:
        with open(params_path) as handle:
            data = yaml.load(handle, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))["data"]
        source = data["source"]
        reading = {k: v for k, v in data.items() if k not in ("source", "contract")}
    except Exception:  # the full load below gives the proper message
        return None, None
    return (source, reading) if isinstance(source, str) else (None, None)


def _stamp_path(out: str | Path) -> Path | None:
    """``.dvc/tmp/ingest-<output>.json`` of the DVC project holding ``out``, if there is one."""
    for parent in Path(out).resolve().parents:
        if (parent / ".dvc").is_dir():
            name = str(Path(out).resolve().relative_to(parent)).replace(os.sep, "_")
            return parent / ".dvc" / "tmp" / f"ingest-{name}.json"
    return None


def _read_stamp(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _write_stamp(path: Path, stamp: dict[str, Any] | None) -> None:
    try:
        if stamp is None:
            path.unlink(missing_ok=True)
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(stamp))
        os.replace(tmp, path)
    except OSError:  # only a shortcut for the next run
        pass


if __name__ == "__main__":
    raise SystemExit(main())
