"""Where a table comes from: ``data.source`` (a packaged dataset, a local CSV/Parquet file or
an fsspec URL) read into a DataFrame. Used by the ``ingest`` stage and by ``validate infer``."""

from __future__ import annotations

import functools
import re
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

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


#: Delimiters tried, in this order, when a CSV header line holds no comma.
OTHER_DELIMITERS = (";", "\t", "|")


def _read_csv(
    source: str,
    missing_values: tuple[str, ...] = (),
    decimal: str = ".",
    thousands: str | None = None,
    encoding: str = "utf-8",
    delimiter: str | None = None,
) -> pd.DataFrame:
    """Read a CSV file; the delimiter is ``delimiter`` (a tab for ``.tsv``) or a comma unless
    the header line holds none and holds ``;``, a tab or ``|`` (wine quality and bank
    marketing ship with ``;``). A header that names a column twice is refused: pandas would
    silently rename the copy ``name.1``.
    ``missing_values`` are read as missing beside pandas' own markers; ``decimal`` and
    ``thousands`` are the numbers' marks, ``encoding`` the text's."""
    import pandas as pd

    sep = delimiter or ","
    text = {"encoding": encoding, "encoding_errors": "strict"}
    header = pd.read_csv(
        source, header=None, nrows=1, dtype=str, keep_default_na=False, sep=sep, **text
    )
    if delimiter is None and len(header.columns) == 1:
        line = str(header.iloc[0, 0])
        sep = next((d for d in OTHER_DELIMITERS if d in line), ",")
        if sep != ",":
            header = pd.read_csv(
                source, header=None, nrows=1, dtype=str, keep_default_na=False, sep=sep, **text
            )
    _refuse_repeated([str(n) for n in header.iloc[0]])
    if decimal == sep:
        raise _HeaderError(
            f"data.decimal is '{decimal}', but '{sep}' also separates its fields; a file with "
            "decimal commas separates fields with ';' (or a tab), or keep data.decimal: '.'"
        )
    # index_col=False: rows that end in one more, empty, field (a trailing delimiter) are read
    # as the header says; by default pandas took their first column as the row index and
    # shifted every name one column to the left, silently.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", pd.errors.ParserWarning)
        try:
            frame = pd.read_csv(
                source,
                sep=sep,
                na_values=list(missing_values) or None,
                decimal=decimal,
                thousands=thousands,
                index_col=False,
                **text,
            )
        except pd.errors.ParserError as exc:
            raise _ragged(exc, sep, len(header.columns)) from None
    if any(issubclass(w.category, pd.errors.ParserWarning) for w in caught):
        raise _HeaderError(
            f"its data rows have more fields than the {len(header.columns)} names of its "
            "header line, and not only a trailing empty one; the extra values would be lost "
            "or every column shifted, so give each field a name in the header at the source."
        )
    return frame


def _ragged(exc: Exception, sep: str, names: int) -> Exception:
    """pandas' "Expected 3 fields in line 12, saw 4" as a sentence that says the likely cause
    (a text value holding the delimiter, unquoted); any other parser error is kept as it is."""
    found = re.search(r"Expected \d+ fields in line (\d+), saw (\d+)", str(exc))
    if not found:
        return exc
    line, saw = found.groups()
    invisible = {"\t": "a tab", " ": "a space"}
    if sep in invisible:
        holds = f"{invisible[sep]} needs double quotes around it"
    else:
        holds = f"'{sep}' needs double quotes around it (as in \"Smith{sep} John\")"
    return _HeaderError(
        f"line {line} has {saw} fields, but the header line names {names} columns. A text "
        f"value that holds {holds}; otherwise the row has a field too many at the source."
    )


def _refuse_repeated(names: list[str]) -> None:
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        where = "; ".join(
            f"'{n}' in columns {', '.join(str(i + 1) for i, m in enumerate(names) if m == n)}"
            for n in repeated
        )
        raise _HeaderError(
            f"its header names a column more than once ({where}); pandas would silently "
            "rename the copies ('name.1'), so give every column its own name at the source."
            + headerless_hint(names)
        )


def headerless_hint(names: list[str]) -> str:
    """A sentence for a table whose column names look like a row of data (half of them or
    more are numbers: adult census' ``adult.data`` has no header line), else ``""``."""
    numbers = 0
    for name in names:
        try:
            float(name)
        except ValueError:
            continue
        numbers += 1
    if not names or numbers * 2 < len(names):
        return ""
    return (
        f" {numbers} of the {len(names)} column names are numbers, so the first line is "
        "probably a row of data: the file needs a header line naming the columns."
    )


class _HeaderError(Exception):
    """A CSV header the pipeline refuses, worded for a person."""


def _read_parquet(source: str, **_: object) -> pd.DataFrame:
    import pandas as pd

    if "://" not in source:  # a URL's schema would cost a second request; pyarrow names it too
        import pyarrow.parquet as pq

        _refuse_repeated(pq.read_schema(source).names)
    return pd.read_parquet(source)


_READERS: dict[str, Callable[..., pd.DataFrame]] = {
    ".csv": _read_csv,
    ".tsv": functools.partial(_read_csv, delimiter="\t"),
    ".parquet": _read_parquet,
    ".pq": _read_parquet,
}


#: Delimited text: read with pandas' CSV parser, whose own missing-value markers apply.
TEXT_SUFFIXES = (".csv", ".tsv")
#: Compression pandas reads from the file name; ``x.csv.gz`` is a CSV file.
COMPRESSIONS = (".gz", ".bz2", ".zip", ".xz", ".zst", ".tar")


def _suffix(source: str) -> str:
    """The file type of ``source``: its last suffix, or the one before a compression suffix."""
    suffixes = [s.lower() for s in Path(source.split("?", 1)[0]).suffixes]
    if len(suffixes) >= 2 and suffixes[-1] in COMPRESSIONS and suffixes[-2] in TEXT_SUFFIXES:
        return suffixes[-2]
    return suffixes[-1] if suffixes else ""


def load_source(
    source: str,
    missing_values: tuple[str, ...] = (),
    decimal: str = ".",
    thousands: str | None = None,
    encoding: str = "utf-8",
) -> pd.DataFrame:
    """Load ``builtin:<name>``, a local CSV/Parquet path, or an fsspec URL (``s3://``,
    ``https://``), reading ``missing_values`` (params ``data.missing_values``) as missing and,
    in a CSV file, ``decimal``, ``thousands`` and ``encoding`` as the params say."""
    if source.startswith("builtin:"):
        name = source.removeprefix("builtin:")
        if name not in BUILTIN:
            raise PipelineError(
                f"data.source '{source}': no built-in dataset '{name}'; "
                f"available: {', '.join('builtin:' + n for n in BUILTIN)}."
            )
        return _mark_missing(BUILTIN[name](), missing_values)

    suffix = _suffix(source)
    reader = _READERS.get(suffix)
    if reader is None:
        raise PipelineError(
            f"data.source '{source}': unsupported file type '{suffix or '(none)'}'; "
            "use a .csv or .tsv file (also compressed: .csv.gz, .tsv.zip, ...), a .parquet file "
            "or builtin:penguins."
        )
    is_url = "://" in source
    if not is_url and not Path(source).is_file():
        raise PipelineError(
            f"data.source '{source}' does not exist (looked in {Path(source).resolve()})."
        )
    if not is_url and Path(source).stat().st_size == 0:
        raise PipelineError(f"data.source '{source}' is an empty file (0 bytes).")
    try:
        frame = reader(
            source,
            missing_values=missing_values,
            decimal=decimal,
            thousands=thousands,
            encoding=encoding,
        )
    except ImportError as exc:
        raise PipelineError(f"data.source '{source}' needs an extra package: {exc}") from None
    except FileNotFoundError:
        raise PipelineError(f"data.source '{source}' does not exist.") from None
    except _HeaderError as exc:
        raise PipelineError(f"data.source '{source}': {exc}") from None
    except UnicodeDecodeError as exc:
        raise PipelineError(
            f"data.source '{source}' is not {encoding} text (it holds the byte "
            f"0x{exc.object[exc.start]:02x}, which {encoding} cannot read there): set "
            "data.encoding in params.yaml to the file's encoding, e.g. latin-1 or cp1252 for an "
            "older spreadsheet export"
        ) from None
    except Exception as exc:  # parsers raise many types; the message is what matters here
        kind = "CSV" if suffix in TEXT_SUFFIXES else "Parquet"
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PipelineError(
            f"data.source '{source}' could not be read as {kind}: {reason}"
        ) from None
    if frame.empty or len(frame.columns) == 0:
        raise PipelineError(f"data.source '{source}' holds no rows.")
    return frame if suffix in TEXT_SUFFIXES else _mark_missing(frame, missing_values)


def _mark_missing(frame: pd.DataFrame, missing_values: tuple[str, ...]) -> pd.DataFrame:
    """``missing_values`` in the text columns of a table not read from CSV become missing; a
    column left holding only numbers (as text) becomes numeric, as a CSV reader would make it."""
    import pandas as pd

    if not missing_values:
        return frame
    frame = frame.copy()
    for name in frame.columns:
        column = frame[name]
        if not (pd.api.types.is_string_dtype(column) or column.dtype == object):
            continue
        hit = column.isin(missing_values)
        if not hit.any():
            continue
        column = column.mask(hit)
        numbers = pd.to_numeric(column, errors="coerce")
        frame[name] = numbers if numbers.notna().sum() == column.notna().sum() else column
    return frame


def ingest(source: str, **reading: Any) -> pd.DataFrame:
    """Load the source (:func:`load_source`, which takes the ``reading`` options) and give
    every column a plain string name."""
    frame = load_source(source, **reading)
    frame.columns = [str(c) for c in frame.columns]
    return frame


#: Short text that tables use for "no value" in a number column.
_MARKER = re.compile(r"[?.\-*/]{1,3}|n/?a|null|none|missing|unknown", re.IGNORECASE)
#: A number written with a decimal comma: ``3,14``, ``-0,5``, ``1.234,5``.
_DECIMAL_COMMA = re.compile(r"[-+]?(\d{1,3}(\.\d{3})+|\d*),\d+")
#: A number written with commas between thousands: ``1,234``, ``12,500.5``.
_THOUSANDS_COMMA = re.compile(r"[-+]?\d{1,3}(,\d{3})+(\.\d+)?")


def is_comma_number(text: str) -> bool:
    """Whether ``text`` is a number written with a comma (decimal or between thousands)."""
    text = text.strip()
    return bool(_THOUSANDS_COMMA.fullmatch(text) or _DECIMAL_COMMA.fullmatch(text))


def comma_reading(texts: list[str]) -> tuple[str, str]:
    """How numbers written with commas are read: ``(what the commas are, the params settings
    that read them)``, or ``("", "")`` when not every text is such a number. Commas before
    groups of three digits in every value (``1,234``) separate thousands; otherwise they are
    decimal marks (``9,4``; ``1.234,5`` also needs ``data.thousands: '.'``)."""
    distinct = {t.strip() for t in texts}
    if not distinct:
        return "", ""
    if all(_THOUSANDS_COMMA.fullmatch(t) for t in distinct):
        return "a comma between thousands", "data.thousands: ','"
    if all(_DECIMAL_COMMA.fullmatch(t) for t in distinct):
        dots = any("." in t for t in distinct)
        return "a decimal comma", "data.decimal: ','" + (" and data.thousands: '.'" if dots else "")
    return "", ""


def looks_missing(text: str) -> bool:
    """Whether ``text`` is short text tables use for "no value" (``?``, ``-``, ``n/a``, ...)."""
    return bool(_MARKER.fullmatch(text.strip()))


def reading_hint(texts: list[str]) -> str:
    """A sentence for the text cells of a number column that a params setting would read
    right, or ``""``: numbers with commas (``data.decimal``, ``data.thousands``), or one to
    three distinct short markers such as ``?`` (``data.missing_values``)."""
    distinct = sorted(set(texts))
    if not distinct:
        return ""
    numbers = [t for t in distinct if is_comma_number(t)]
    rest = [t for t in distinct if not is_comma_number(t)]
    commas, setting = comma_reading(numbers)
    markers = 0 < len(rest) <= 3 and all(looks_missing(t) for t in rest)
    shown = ", ".join(repr(t) for t in rest)
    if setting and not rest:
        return f"they look like numbers with {commas}: set {setting} in params.yaml"
    if setting and markers:
        # pandas reads a column as numbers only when every value is one: a single '?' among
        # decimal commas keeps the whole column text, whatever data.decimal says.
        return (
            f"they look like numbers with {commas}, and {shown} like a missing value: set "
            f"{setting} and add {shown} to data.missing_values in params.yaml (a column is "
            "read as numbers only when every value is one)"
        )
    if markers and not numbers:
        return (
            f"if {shown} {'marks' if len(rest) == 1 else 'mark'} a missing value, add "
            f"{'it' if len(rest) == 1 else 'them'} to data.missing_values in params.yaml"
        )
    return ""
