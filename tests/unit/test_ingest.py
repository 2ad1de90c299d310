import pandas as pd
import pytest

from pipeline.errors import PipelineError
from pipeline.sources import ingest, load_source
from pipeline.stages.ingest import main, write_if_changed
from tests.conftest import REPO_ROOT


def test_builtin_penguins_ships_with_the_package():
    frame = load_source("builtin:penguins")
    assert frame.shape == (344, 8)
    assert set(frame["species"]) == {"Adelie", "Chinstrap", "Gentoo"}


def test_csv_and_parquet_round_trip(tmp_path, tiny):
    tiny.to_csv(tmp_path / "d.csv", index=False)
    tiny.to_parquet(tmp_path / "d.parquet", index=False)
    from_csv = ingest(str(tmp_path / "d.csv"))
    from_parquet = ingest(str(tmp_path / "d.parquet"))
    assert list(from_csv.columns) == list(tiny.columns)
    assert len(from_csv) == len(from_parquet) == len(tiny)
    assert from_parquet["bill_length_mm"].isna().sum() == tiny["bill_length_mm"].isna().sum()


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(PipelineError, match=r"'.*nope\.csv' does not exist"):
        load_source(str(tmp_path / "nope.csv"))


def test_unreadable_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"this is not parquet")
    with pytest.raises(PipelineError, match="could not be read as Parquet"):
        load_source(str(bad))


def test_unsupported_type_and_unknown_builtin(tmp_path):
    with pytest.raises(PipelineError, match="unsupported file type '.xlsx'"):
        load_source(str(tmp_path / "d.xlsx"))
    with pytest.raises(
        PipelineError, match="no built-in dataset 'iris'; available: builtin:penguins"
    ):
        load_source("builtin:iris")


def test_empty_csv(tmp_path):
    (tmp_path / "e.csv").write_text("a,b\n")
    with pytest.raises(PipelineError, match="holds no rows"):
        load_source(str(tmp_path / "e.csv"))


def test_cli_prints_one_line_error_and_exits_1(tmp_path, capsys, repo_root):
    params = (repo_root / "params.yaml").read_text().replace("builtin:penguins", "missing.csv")
    (tmp_path / "params.yaml").write_text(params)
    out = tmp_path / "raw.parquet"
    code = main(["--params", str(tmp_path / "params.yaml"), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith("ingest failed: data.source 'missing.csv' does not exist")
    assert "Traceback" not in err
    assert not out.exists()


def test_cli_writes_the_raw_table(tmp_path, repo_root):
    out = tmp_path / "raw" / "dataset.parquet"
    assert main(["--params", str(repo_root / "params.yaml"), "--out", str(out)]) == 0
    assert pd.read_parquet(out).shape == (344, 8)
    assert [p.name for p in out.parent.iterdir()] == ["dataset.parquet"]  # no temp leftovers


def test_output_is_rewritten_only_when_the_table_changes(tmp_path, tiny):
    out = tmp_path / "raw" / "dataset.parquet"
    assert write_if_changed(out, tiny) is True
    stamp = out.stat().st_mtime_ns
    assert write_if_changed(out, tiny.copy()) is False  # same content: file left as it was
    assert out.stat().st_mtime_ns == stamp
    assert write_if_changed(out, tiny.head(5)) is True
    assert len(pd.read_parquet(out)) == 5
    assert [p.name for p in out.parent.iterdir()] == ["dataset.parquet"]


def test_cli_says_when_the_source_is_unchanged(tmp_path, repo_root, capsys):
    out = tmp_path / "dataset.parquet"
    args = ["--params", str(repo_root / "params.yaml"), "--out", str(out)]
    assert main(args) == 0 and main(args) == 0
    assert capsys.readouterr().out.splitlines()[-1] == (
        f"ingest: the table is unchanged: builtin:penguins holds what {out} already has (344 "
        "rows x 8 columns); left as it was"
    )


def _run_ingest(project, source: str) -> str:
    """The stage as DVC runs it, in a fresh process (the shortcut must not import pandas)."""
    import subprocess
    import sys

    params = (REPO_ROOT / "params.yaml").read_text().replace("builtin:penguins", source)
    (project / "params.yaml").write_text(params)
    code = (
        "import sys, runpy; sys.argv = ['ingest', '--params', 'params.yaml', '--out', "
        "'data/raw/dataset.parquet']\n"
        "try:\n    runpy.run_module('pipeline.stages.ingest', run_name='__main__')\n"
        "except SystemExit:\n    pass\n"
        "print('pandas imported' if 'pandas' in sys.modules else 'pandas not imported')"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=project, capture_output=True, text=True, check=True
    )
    return done.stdout + done.stderr


def test_an_unchanged_source_is_recognised_without_reading_it(tmp_path, tiny):
    project = tmp_path / "project"
    (project / ".dvc").mkdir(parents=True)
    source = project / "table.csv"
    tiny.to_csv(source, index=False)
    out = project / "data" / "raw" / "dataset.parquet"

    first = _run_ingest(project, "table.csv")
    assert f"{len(tiny)} rows" in first and "pandas imported" in first
    assert list((project / ".dvc" / "tmp").glob("ingest-*.json"))

    second = _run_ingest(project, "table.csv")
    assert "unchanged (as in the last run)" in second
    assert "pandas not imported" in second

    # Overwritten in place with other content of the same size: read again, output rewritten.
    changed = tiny.copy()
    changed.loc[0, "island"] = "Dream" if changed.loc[0, "island"] != "Dream" else "Biscoe"
    before = out.read_bytes()
    changed.to_csv(source, index=False)
    third = _run_ingest(project, "table.csv")
    assert "pandas imported" in third and "->" in third
    assert out.read_bytes() != before
    assert pd.read_parquet(out).loc[0, "island"] == changed.loc[0, "island"]

    # The output replaced behind the stage's back (another checkout): read and rewritten.
    pd.DataFrame({"x": [1]}).to_parquet(out)
    fourth = _run_ingest(project, "table.csv")
    assert "pandas imported" in fourth
    assert len(pd.read_parquet(out)) == len(tiny)

    # Another source in params: read, even though the old one is unchanged.
    tiny.head(3).to_csv(project / "other.csv", index=False)
    assert "3 rows" in _run_ingest(project, "other.csv")


def test_a_semicolon_or_tab_delimited_csv_is_read_by_its_delimiter(tmp_path, tiny):
    """Wine quality and bank marketing ship as ';'-delimited CSV with quoted names."""
    for sep, name in ((";", "semi.csv"), ("\t", "tab.csv"), ("|", "pipe.csv")):
        tiny.to_csv(tmp_path / name, sep=sep, index=False, quoting=1 if sep == ";" else 0)
        frame = ingest(str(tmp_path / name))
        assert list(frame.columns) == list(tiny.columns), sep
        assert frame["bill_length_mm"].dtype == "float64"
        assert frame["species"].tolist() == tiny["species"].tolist()


def test_a_comma_csv_with_semicolons_in_its_values_stays_comma_delimited(tmp_path):
    (tmp_path / "d.csv").write_text('name,note\nx,"a;b"\ny,c\n')
    frame = ingest(str(tmp_path / "d.csv"))
    assert list(frame.columns) == ["name", "note"]
    assert frame["note"].tolist() == ["a;b", "c"]


def test_rows_with_a_trailing_delimiter_are_read_as_the_header_says(tmp_path, tiny):
    """Every data row ending in ',' made pandas take the first column as the row index and
    shift each name one column left: 'species' held the islands, validate blamed 9 rules."""
    lines = tiny.to_csv(index=False).splitlines()
    (tmp_path / "d.csv").write_text("\n".join([lines[0]] + [f"{r}," for r in lines[1:]]) + "\n")
    frame = ingest(str(tmp_path / "d.csv"))
    assert list(frame.columns) == list(tiny.columns)
    assert frame["species"].tolist() == tiny["species"].tolist()
    tiny.to_csv(tmp_path / "plain.csv", index=False)
    pd.testing.assert_frame_equal(frame, ingest(str(tmp_path / "plain.csv")))


def test_rows_with_more_values_than_the_header_are_refused(tmp_path):
    (tmp_path / "d.csv").write_text("a,b,y\n1,2,p,9\n3,4,q,8\n")
    with pytest.raises(PipelineError) as caught:
        load_source(str(tmp_path / "d.csv"))
    assert str(caught.value) == (
        f"data.source '{tmp_path / 'd.csv'}': its data rows have more fields than the 3 names "
        "of its header line, and not only a trailing empty one; the extra values would be lost "
        "or every column shifted, so give each field a name in the header at the source."
    )


def test_a_header_naming_a_column_twice_is_refused(tmp_path):
    (tmp_path / "d.csv").write_text("age,income,age,y\n1,2,3,p\n")
    with pytest.raises(PipelineError) as caught:
        load_source(str(tmp_path / "d.csv"))
    assert str(caught.value) == (
        f"data.source '{tmp_path / 'd.csv'}': its header names a column more than once "
        "('age' in columns 1, 3); pandas would silently rename the copies ('name.1'), so give "
        "every column its own name at the source."
    )


def test_a_compressed_csv_is_read(tmp_path, tiny):
    tiny.to_csv(tmp_path / "d.csv.gz", index=False)
    assert ingest(str(tmp_path / "d.csv.gz")).shape == tiny.shape


def test_a_zero_byte_file_is_named_empty(tmp_path):
    (tmp_path / "e.csv").write_bytes(b"")
    with pytest.raises(PipelineError, match=r"'.*e\.csv' is an empty file \(0 bytes\)\.$"):
        load_source(str(tmp_path / "e.csv"))


def test_a_byte_order_mark_does_not_reach_the_first_column_name(tmp_path):
    (tmp_path / "d.csv").write_bytes(b"\xef\xbb\xbfa;b\n1;2\n")
    assert list(ingest(str(tmp_path / "d.csv")).columns) == ["a", "b"]


def test_a_parquet_file_naming_a_column_twice_is_refused_in_the_same_words(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table([pa.array([1, 2]), pa.array([3, 4]), pa.array(["p", "q"])], ["a", "a", "y"])
    pq.write_table(table, tmp_path / "d.parquet")
    with pytest.raises(PipelineError, match=r"header names a column more than once \('a' in co"):
        load_source(str(tmp_path / "d.parquet"))


def test_a_file_without_a_header_line_is_named_as_such(tmp_path):
    """adult.data has no header: its first row becomes the column names."""
    from pipeline.stages.validate import draft_contract

    rows = "39, State-gov, 77516, 13, 0, <=50K\n50, Private, 83311, 13, 0, >50K\n" * 30
    (tmp_path / "adult.csv").write_text(rows)
    frame = ingest(str(tmp_path / "adult.csv"))
    with pytest.raises(PipelineError) as caught:
        draft_contract(frame, "income")
    assert str(caught.value).endswith(
        " 4 of the 6 column names are numbers, so the first line is probably a row of data: "
        "the file needs a header line naming the columns."
    )
    (tmp_path / "dup.csv").write_text("39, 0, 0, <=50K\n50, 1, 0, >50K\n")
    with pytest.raises(PipelineError, match=r"more than once \(' 0' in columns 2, 3\).*row of"):
        load_source(str(tmp_path / "dup.csv"))


def _heart(tmp_path):
    """UCI heart disease writes '?' for a missing value in its number columns."""
    rows = ["age,ca,thal,num"] + [
        f"{40 + i % 30},{i % 4}.0,{(3, 6, 7)[i % 3]}.0,{i % 2}" for i in range(60)
    ]
    rows[7], rows[20] = "48,?,3.0,0", "51,0.0,?,1"
    (tmp_path / "heart.csv").write_text("\n".join(rows) + "\n")
    return str(tmp_path / "heart.csv")


def test_data_missing_values_reads_a_marker_as_missing_and_the_column_as_numbers(tmp_path):
    source = _heart(tmp_path)
    plain = ingest(source)
    assert plain["ca"].map(type).eq(str).all() and "?" in set(plain["ca"])
    frame = ingest(source, missing_values=("?",))
    assert frame["ca"].dtype == "float64" and frame["thal"].dtype == "float64"
    assert frame["ca"].isna().sum() == 1 and frame["thal"].isna().sum() == 1
    assert frame.loc[0, "ca"] == 0.0


def test_data_missing_values_applies_to_the_text_columns_of_a_parquet_file(tmp_path):
    pd.DataFrame({"ca": ["0.0", "?", "2.0"], "kind": ["a", "?", "b"], "n": [1, 2, 3]}).to_parquet(
        tmp_path / "d.parquet"
    )
    frame = ingest(str(tmp_path / "d.parquet"), missing_values=("?",))
    assert frame["ca"].tolist()[0] == 0.0 and frame["ca"].dtype == "float64"
    assert frame["kind"].isna().tolist() == [False, True, False]
    assert frame["n"].tolist() == [1, 2, 3]


def test_data_decimal_reads_decimal_commas(tmp_path):
    (tmp_path / "eu.csv").write_text("alcohol;quality\n9,4;5\n10,25;6\n-0,5;5\n")
    assert ingest(str(tmp_path / "eu.csv"))["alcohol"].tolist() == ["9,4", "10,25", "-0,5"]
    frame = ingest(str(tmp_path / "eu.csv"), decimal=",")
    assert frame["alcohol"].tolist() == [9.4, 10.25, -0.5]


def test_a_decimal_comma_in_a_comma_delimited_file_is_refused_in_words(tmp_path, tiny):
    tiny.to_csv(tmp_path / "d.csv", index=False)
    with pytest.raises(PipelineError) as caught:
        load_source(str(tmp_path / "d.csv"), decimal=",")
    assert str(caught.value) == (
        f"data.source '{tmp_path / 'd.csv'}': data.decimal is ',', but ',' also separates its "
        "fields; a file with decimal commas separates fields with ';' (or a tab), or keep "
        "data.decimal: '.'"
    )


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("decimal", "';'", "'params.data.decimal' must be '.' or ',', not ';'."),
        ("missing_values", "'?'", "'params.data.missing_values' must be a list, got '?'."),
        ("missing_values", "[-1]", "'params.data.missing_values' must be a list of text values"),
        ("thousands", "'-'", "'params.data.thousands' must be null or one of ',', '.', ' ',"),
        ("thousands", "'.'", "'params.data.thousands' and 'params.data.decimal' are both '.'"),
        ("encoding", "klingon", "'params.data.encoding' 'klingon' is not an encoding Python"),
    ],
)
def test_bad_reading_params_are_named(tmp_path, key, value, message):
    from pipeline.config import load_params

    text = (REPO_ROOT / "params.yaml").read_text()
    default = {
        "decimal": 'decimal: "."',
        "missing_values": "missing_values: []",
        "thousands": "thousands: null",
        "encoding": "encoding: utf-8",
    }[key]
    assert default in text
    (tmp_path / "params.yaml").write_text(text.replace(default, f"{key}: {value}", 1))
    with pytest.raises(PipelineError) as caught:
        load_params(tmp_path / "params.yaml")
    assert message in str(caught.value)


def test_a_changed_reading_setting_reads_an_unchanged_source_again(tmp_path):
    """The stage's shortcut skips reading an unchanged file; a new data.missing_values must
    still reach the output."""
    project = tmp_path / "project"
    (project / ".dvc").mkdir(parents=True)
    _heart(project)
    out = project / "data" / "raw" / "dataset.parquet"
    assert "pandas imported" in _run_ingest(project, "heart.csv")
    assert "unchanged (as in the last run)" in _run_ingest(project, "heart.csv")
    assert pd.read_parquet(out)["ca"].dtype != "float64"
    params = (project / "params.yaml").read_text()
    (project / "params.yaml").write_text(
        params.replace("missing_values: []", "missing_values: ['?']")
    )
    code = (
        "import sys, runpy; sys.argv = ['ingest', '--params', 'params.yaml', '--out', "
        "'data/raw/dataset.parquet']\n"
        "runpy.run_module('pipeline.stages.ingest', run_name='__main__')"
    )
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", code], cwd=project, capture_output=True, text=True)
    assert "-> data/raw/dataset.parquet" in done.stdout, done.stdout + done.stderr
    assert pd.read_parquet(out)["ca"].dtype == "float64"


def test_data_thousands_reads_numbers_with_commas_between_thousands(tmp_path):
    (tmp_path / "d.csv").write_text('price,rooms\n"1,234",2\n"12,500.5",4\n')
    assert ingest(str(tmp_path / "d.csv"))["price"].tolist() == ["1,234", "12,500.5"]
    assert ingest(str(tmp_path / "d.csv"), thousands=",")["price"].tolist() == [1234.0, 12500.5]


def test_a_file_in_another_encoding_is_named_with_the_setting_that_reads_it(tmp_path):
    (tmp_path / "d.csv").write_bytes("city,temp\nSão Paulo,21.5\nMünchen,9.1\n".encode("cp1252"))
    with pytest.raises(PipelineError) as caught:
        load_source(str(tmp_path / "d.csv"))
    assert str(caught.value) == (
        f"data.source '{tmp_path / 'd.csv'}' is not utf-8 text (it holds the byte 0xe3, which "
        "utf-8 cannot read there): set data.encoding in params.yaml to the file's encoding, "
        "e.g. latin-1 or cp1252 for an older spreadsheet export"
    )
    frame = ingest(str(tmp_path / "d.csv"), encoding="cp1252")
    assert frame["city"].tolist() == ["São Paulo", "München"]


def test_a_tsv_file_is_read_by_tabs_even_with_commas_in_its_header(tmp_path):
    (tmp_path / "d.tsv").write_text("name, full\tscore\nAda, L\t3.5\nBo\t4\n")
    frame = ingest(str(tmp_path / "d.tsv"))
    assert list(frame.columns) == ["name, full", "score"]
    assert frame["score"].tolist() == [3.5, 4.0]
    frame.to_csv(tmp_path / "e.tsv.gz", sep="\t", index=False)
    assert ingest(str(tmp_path / "e.tsv.gz")).equals(frame)


def test_a_row_with_an_unquoted_delimiter_is_named_by_its_line(tmp_path):
    """A ',' inside a text value, unquoted, is one field too many on that line; pandas said
    "Error tokenizing data. C error: Expected 3 fields in line 4, saw 4"."""
    (tmp_path / "d.csv").write_text('name,age,y\n"Smith, John",3,p\nAda,5,q\nDoe, Jane,4,q\n')
    with pytest.raises(PipelineError) as caught:
        load_source(str(tmp_path / "d.csv"))
    assert str(caught.value) == (
        f"data.source '{tmp_path / 'd.csv'}': line 4 has 4 fields, but the header line names 3 "
        "columns. A text value that holds ',' needs double quotes around it (as in \"Smith, "
        'John"); otherwise the row has a field too many at the source.'
    )
    (tmp_path / "t.tsv").write_text("name\tage\ty\nAda\t5\tq\nDoe\tJane\t4\tq\n")
    with pytest.raises(
        PipelineError,
        match="line 3 has 4 fields, but the header line names 3 "
        "columns. A text value that holds a tab needs double quotes around it;",
    ):
        load_source(str(tmp_path / "t.tsv"))
