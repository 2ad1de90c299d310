"""``ingest``: read ``data.source`` and write the raw table, unchanged, as Parquet.

``dvc.yaml`` runs this stage on every ``dvc repro`` (``always_changed``): ``data.source`` may be
a local file, a URL or a packaged dataset, and only reading it tells whether its content
changed. The output is rewritten only when the table's bytes differ from the ones already
there, so an unchanged source leaves ``data/raw/dataset.parquet`` untouched and DVC skips every
later stage; a changed one reruns the pipeline from ``validate``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import pandas as pd

from pipeline.config import load_params
from pipeline.errors import cli
from pipeline.io import file_sha256
from pipeline.sources import ingest


def write_if_changed(path: str | Path, frame: pd.DataFrame) -> bool:
    """Write ``frame`` to ``path`` as Parquet unless the file there already holds these bytes.

    Returns whether the file was (re)written. The write is atomic: a temporary sibling is
    written, compared, and either moved into place or removed, so the old file's timestamp and
    content stay as they were when nothing changed.
    """
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

    params = load_params(args.params)
    frame = ingest(params.data.source)
    shape = f"{len(frame)} rows x {len(frame.columns)} columns"
    if write_if_changed(args.out, frame):
        print(f"ingest: {shape} -> {args.out}")
    else:
        print(f"ingest: {params.data.source} is unchanged ({shape}); {args.out} left as it was")


if __name__ == "__main__":
    raise SystemExit(main())
