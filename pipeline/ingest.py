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
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from pipeline.config import load_params
from pipeline.errors import PipelineError, cli
from pipeline.io import file_sha256


def _penguins() -> pd.DataFrame:
    from palmerpenguins import load_penguins

    return load_penguins()


#: Datasets that ship inside an installed package, so nothing is downloaded at run time.
BUILTIN: dict[str, Callable[[], pd.DataFrame]] = {"penguins": _penguins}

_READERS: dict[str, Callable[..., pd.DataFrame]] = {
    ".csv": pd.read_csv,
    ".parquet": pd.read_parquet,
    ".pq": pd.read_parquet,
}


def load_source(source: str) -> pd.DataFrame:
    """Load ``builtin:<name>``, a local CSV/Parquet path, or an fsspec URL (``s3://``, ``https://``)."""
    if source.startswith("builtin:"):
        name = source.removeprefix("builtin:")
        if name not in BUILTIN:
            raise PipelineError(
                f"data.source '{source}': no built-in dataset '{name}'; "
                f"available: {', '.join('builtin:' + n for n in BUILTIN)}."
            )
        return BUILTIN[name]()

    suffix = Path(source.split("?", 1)[0]).suffix.lower()
    reader = _READERS.get(suffix)
    if reader is None:
        raise PipelineError(
            f"data.source '{source}': unsupported file type '{suffix or '(none)'}'; "
            "use a .csv or .parquet file, or builtin:penguins."
        )
    is_url = "://" in source
    if not is_url and not Path(source).is_file():
        raise PipelineError(
            f"data.source '{source}' does not exist (looked in {Path(source).resolve()})."
        )
    try:
        frame = reader(source)
    except ImportError as exc:
        raise PipelineError(f"data.source '{source}' needs an extra package: {exc}") from None
    except FileNotFoundError:
        raise PipelineError(f"data.source '{source}' does not exist.") from None
    except Exception as exc:  # parsers raise many types; the message is what matters here
        kind = "CSV" if suffix == ".csv" else "Parquet"
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PipelineError(
            f"data.source '{source}' could not be read as {kind}: {reason}"
        ) from None
    if frame.empty or len(frame.columns) == 0:
        raise PipelineError(f"data.source '{source}' holds no rows.")
    return frame


def ingest(source: str) -> pd.DataFrame:
    """Load the source and give every column a plain string name."""
    frame = load_source(source)
    frame.columns = [str(c) for c in frame.columns]
    return frame


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
