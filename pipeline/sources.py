"""Where a table comes from: ``data.source`` (a packaged dataset, a local CSV/Parquet file or
an fsspec URL) read into a DataFrame. Used by the ``ingest`` stage and by ``validate infer``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.errors import PipelineError

if TYPE_CHECKING:  # pandas is imported when a table is read (ingest's shortcut needs none)
    import pandas as pd


def _penguins() -> pd.DataFrame:
    from palmerpenguins import load_penguins

    return load_penguins()


#: The package each built-in dataset ships in (its version identifies the data).
BUILTIN_PACKAGES: dict[str, str] = {"penguins": "palmerpenguins"}

#: Datasets that ship inside an installed package, so nothing is downloaded at run time.
BUILTIN: dict[str, Callable[[], pd.DataFrame]] = {"penguins": _penguins}


def _read_csv(source: str) -> pd.DataFrame:
    import pandas as pd

    return pd.read_csv(source)


def _read_parquet(source: str) -> pd.DataFrame:
    import pandas as pd

    return pd.read_parquet(source)


_READERS: dict[str, Callable[[str], pd.DataFrame]] = {
    ".csv": _read_csv,
    ".parquet": _read_parquet,
    ".pq": _read_parquet,
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
