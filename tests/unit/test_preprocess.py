import numpy as np
import pandas as pd
import pytest

from pipeline.errors import PipelineError
from pipeline.stages.preprocess import (
    Splits,
    fit_preprocessor,
    split_data,
    summary,
    to_model_frame,
    unseen_categories,
)


def test_model_frame_types_and_missing_values(tiny, contract):
    frame = to_model_frame(tiny, contract)
    assert list(frame.columns) == contract.feature_names
    assert frame["bill_length_mm"].dtype == np.float64
    assert frame["sex"].dtype == object
    missing_sex = tiny["sex"].isna().to_numpy()
    assert missing_sex.any()
    assert (frame.loc[missing_sex, "sex"] == "").all()
    assert "year" not in frame.columns


def test_model_frame_names_missing_feature(tiny, contract):
    with pytest.raises(PipelineError, match="missing feature column\\(s\\): island"):
        to_model_frame(tiny.drop(columns="island"), contract)


def test_split_is_stratified_seeded_and_disjoint(penguins):
    a = split_data(penguins, "species", seed=7, test_size=0.2, val_size=0.2)
    b = split_data(penguins, "species", seed=7, test_size=0.2, val_size=0.2)
    pd.testing.assert_frame_equal(a.test, b.test)
    assert (len(a.train), len(a.val), len(a.test)) == (206, 69, 69)
    share = penguins["species"].value_counts(normalize=True)
    test_share = a.test["species"].value_counts(normalize=True)
    assert (test_share - share).abs().max() < 0.02
    keys = [tuple(map(str, r)) for part in (a.train, a.val, a.test) for r in part.to_numpy()]
    assert len(keys) == len(penguins)


def test_split_rejects_tiny_classes(tiny):
    two = pd.concat([tiny, tiny.iloc[:2].assign(species="Emperor")])
    with pytest.raises(
        PipelineError,
        match="'Emperor' \\(2\\) have fewer than 5 distinct rows \\(rows with the same",
    ):
        split_data(two, "species", 1, 0.2, 0.2)


def test_split_rejects_bad_sizes(tiny):
    with pytest.raises(PipelineError, match="sum to less than 1"):
        split_data(tiny, "species", 1, 0.6, 0.5)


def test_preprocessor_fits_on_train_only_and_handles_unseen(tiny, contract):
    splits = split_data(tiny, "species", 3, 0.25, 0.25)
    pre = fit_preprocessor(splits.train, contract)
    names = list(pre.get_feature_names_out())
    assert names[:4] == [f"num__{c}" for c in contract.numeric_features]
    scaler = pre.named_transformers_["num"].named_steps["scale"]
    expected_mean = splits.train["bill_length_mm"].mean()  # NaN rows imputed with the median
    assert abs(scaler.mean_[0] - expected_mean) < 1.0
    unseen = splits.test.head(1).assign(island="Atlantis", bill_length_mm=np.nan)
    row = pre.transform(to_model_frame(unseen, contract))
    island = [i for i, n in enumerate(names) if n.startswith("cat__island_")]
    assert row[0, island].tolist() == [0.0] * len(island)  # unseen -> all zeros
    assert np.isfinite(row).all()


def test_copies_of_a_row_never_straddle_the_splits(penguins):
    tenfold = pd.concat([penguins] * 10, ignore_index=True)
    splits = split_data(tenfold, "species", seed=3, test_size=0.2, val_size=0.2)
    keys = {
        name: {tuple(map(str, row)) for row in getattr(splits, name).to_numpy()}
        for name in ("train", "val", "test")
    }
    assert not keys["train"] & keys["test"]
    assert not keys["train"] & keys["val"]
    assert not keys["val"] & keys["test"]
    assert sum(len(getattr(splits, n)) for n in ("train", "val", "test")) == 3440
    assert len(splits.test) == 690  # 69 distinct rows, each with its 10 copies


def test_a_table_without_copies_splits_as_before(penguins):
    """No duplicates: the same rows as a plain stratified row split with the same seed."""
    from sklearn.model_selection import train_test_split

    splits = split_data(penguins, "species", seed=7, test_size=0.2, val_size=0.2)
    rest, test = train_test_split(
        penguins, test_size=0.2, stratify=penguins["species"], random_state=7
    )
    pd.testing.assert_frame_equal(splits.test, test.reset_index(drop=True))


def test_a_regression_split_is_not_stratified(penguins):
    frame = penguins.dropna(subset=["body_mass_g"])
    splits = split_data(frame, "body_mass_g", seed=1, test_size=0.2, val_size=0.2, stratify=False)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (204, 69, 69)


def test_an_integer_code_column_with_a_gap_keeps_its_codes_as_text():
    """pandas reads ``1,,3`` as floats: the codes must still be "1" and "3", as the contract,
    the other rows and a request write them, never "1.0"."""
    import io

    from pipeline.contract import parse_contract
    from pipeline.frames import category_text

    frame = pd.read_csv(io.StringIO("x,code,y\n0.5,1,0\n1.5,,1\n2.5,3,\n3.5,2,1\n"))
    assert frame["code"].dtype == np.float64 and frame["y"].dtype == np.float64
    code = category_text(frame["code"])
    assert (code.iloc[0], code.iloc[2], code.iloc[3]) == ("1", "3", "2")
    assert pd.isna(code.iloc[1])
    assert category_text(frame["y"]).dropna().tolist() == ["0", "1", "1"]
    assert category_text(pd.Series([2.5, np.inf, 1e17, 7.0])).tolist() == [
        "2.5",
        "inf",
        "1e+17",
        "7",
    ]
    contract = parse_contract(
        {
            "columns": {
                "x": {"type": "numeric"},
                "code": {"type": "categorical", "categories": ["1", "2", "3"], "max_missing": 0.5},
                "y": {"type": "categorical", "role": "target", "categories": ["0", "1"]},
            }
        }
    )
    assert to_model_frame(frame, contract)["code"].tolist() == ["1", "", "3", "2"]


def test_an_input_seen_with_both_labels_is_never_split_by_its_label():
    """The groups hashed every column, the target too: (x, neg) and (x, pos) were two groups,
    so on a table whose inputs repeat every test row whose input was also in train had only
    the opposite label there (the helper's all-categorical table: test ROC AUC 0.03 to 0.17)."""
    rng = np.random.default_rng(0)
    n = 800
    frame = pd.DataFrame(
        {"a": rng.choice(list("abcdefghij"), n), "b": rng.choice(list("pqrstu"), n)}
    )
    frame["label"] = np.where(rng.random(n) < np.where(frame.a < "e", 0.8, 0.3), "pos", "neg")
    splits = split_data(frame, "label", 42, 0.2, 0.2)
    inputs = {name: set(map(tuple, getattr(splits, name)[["a", "b"]].to_numpy()))
              for name in ("train", "val", "test")}  # fmt: skip
    assert not inputs["train"] & inputs["test"] and not inputs["train"] & inputs["val"]
    assert not inputs["val"] & inputs["test"]
    assert sum(len(getattr(splits, name)) for name in ("train", "val", "test")) == n
    assert set(splits.test["label"]) == {"pos", "neg"}
    # Grouped by the model's inputs when named: an ignored id column does not make every row
    # a group of its own.
    with_ids = frame.assign(row_id=range(n))
    by_features = split_data(with_ids, "label", 42, 0.2, 0.2, features=["a", "b"])
    pd.testing.assert_frame_equal(by_features.test.drop(columns="row_id"), splits.test)


def _repeating(groups: int, label) -> pd.DataFrame:
    rows = [{"x": g, "t": label(g, i)} for g in range(groups) for i in range(50)]
    return pd.DataFrame(rows)


def test_a_class_that_is_never_a_groups_majority_still_splits():
    """Every input is seen with both labels, 'yes' the minority of all but one: stratifying by
    each group's label gave scikit-learn a class of one group (a ValueError traceback)."""
    frame = _repeating(12, lambda g, i: "yes" if i < (35 if g == 0 else 15) else "no")
    splits = split_data(frame, "t", 0, 0.2, 0.2, True, ["x"])
    for part in (splits.train, splits.val, splits.test):
        assert set(part["t"]) == {"yes", "no"}


def test_a_split_that_would_leave_a_class_out_is_refused_by_name():
    """Titanic's 12 distinct inputs left the test split with one class: validate passed,
    the metrics were NaN and the gate said to lower a bound."""
    frame = _repeating(12, lambda g, i: "yes" if g < 5 and i < 3 else "no")
    with pytest.raises(PipelineError, match=r"the validation split holds no row of class\(es\) "
                       r"'yes'\. The table has 12 distinct inputs"):  # fmt: skip
        split_data(frame, "t", 0, 0.2, 0.2, True, ["x"])


def test_rows_without_a_target_are_counted_in_the_summary(penguins):
    frame = penguins.copy()
    frame.loc[:9, "species"] = None
    splits = split_data(frame, "species", 42, 0.2, 0.2)
    assert sum(len(s) for s in (splits.train, splits.val, splits.test)) == len(frame) - 10
    assert summary(splits, 9, frame, "species") == (
        f"preprocess: train {len(splits.train)}, val {len(splits.val)}, test "
        f"{len(splits.test)} rows; 9 model features; 10 of 344 rows have no 'species' and are "
        "left out of every split"
    )
    full = split_data(penguins, "species", 42, 0.2, 0.2)
    assert summary(full, 9, penguins, "species").endswith("rows; 9 model features")


def test_categories_outside_the_training_split_are_named(penguins, contract):
    """iowa electricity: one feature of three values, each value's rows in one split whole;
    the test value was never seen in training and nothing said so."""
    torgersen = penguins["island"].eq("Torgersen")
    train, held = penguins[~torgersen], penguins[torgersen]
    splits = Splits(train.iloc[:-20], train.iloc[-20:], held)
    assert unseen_categories(splits, contract) == (
        "preprocess: note: the validation or test split holds categories no training row has, "
        "which the model can only read as unknown: 'island' 'Torgersen'. Rows with equal inputs "
        "stay in one split, so on a small table a rare category can land outside train; add "
        "rows, or merge rare categories at the source."
    )
    assert unseen_categories(split_data(penguins, "species", 42, 0.2, 0.2), contract) == ""
