"""``preprocess``: train/validation/test split and the fitted column transformer.

The split keeps copies of a row together (see :func:`split_data`) and is stratified by the
target for classification.

The transformer is fitted on the training split only. Splits keep the raw columns exactly as
ingested; :func:`to_model_frame` is the one place that turns raw rows into model input.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from pipeline.config import load_params
from pipeline.contract import Contract, load_contract, min_rows_per_class
from pipeline.errors import PipelineError, cli
from pipeline.frames import MISSING_CATEGORY, category_text, to_model_frame
from pipeline.io import atomic_path, read_json, read_table, write_table


@dataclass(frozen=True)
class Splits:
    train: pd.DataFrame
    val: pd.DataFrame
    test: pd.DataFrame


def build_preprocessor(contract: Contract) -> ColumnTransformer:
    """Impute + scale numeric features; impute + one-hot categorical ones (unseen -> zeros)."""
    numeric = Pipeline([("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())])
    categorical = Pipeline(
        [
            (
                "impute",
                SimpleImputer(missing_values=MISSING_CATEGORY, strategy="most_frequent"),
            ),
            ("onehot", OneHotEncoder(handle_unknown="ignore", sparse_output=False)),
        ]
    )
    transformers = []
    if contract.numeric_features:
        transformers.append(("num", numeric, contract.numeric_features))
    if contract.categorical_features:
        transformers.append(("cat", categorical, contract.categorical_features))
    return ColumnTransformer(transformers, remainder="drop", verbose_feature_names_out=True)


def split_data(
    frame: pd.DataFrame,
    target: str,
    seed: int,
    test_size: float,
    val_size: float,
    stratify: bool = True,
    features: Sequence[str] | None = None,
) -> Splits:
    """Split into train/validation/test by the model's inputs; sizes are shares of groups.

    Rows with the same ``features`` (default: every column but the target) form one group and
    go to the same split, whatever their labels: copies can never sit on both sides and
    inflate the test metrics, and an input seen with both labels is not split by label. (The
    groups once included the target: on a table whose inputs repeat, every test row whose
    input was also in train had only the opposite label there, and test ROC AUC fell to 0.03.)
    The groups are split with ``train_test_split``, stratified by the target of each group's
    first row when ``stratify`` (classification); a table whose inputs never repeat splits
    exactly as a plain stratified row split would, with sizes that are shares of its rows.
    """
    if not 0 < test_size < 1 or not 0 < val_size < 1 or test_size + val_size >= 1:
        raise PipelineError(
            f"preprocess.test_size ({test_size}) and val_size ({val_size}) must be in (0, 1) "
            "and sum to less than 1."
        )
    frame = frame[frame[target].notna()].reset_index(drop=True)
    keys = frame[list(features)] if features is not None else frame.drop(columns=[target])
    codes, _ = pd.factorize(pd.util.hash_pandas_object(keys, index=False))
    groups = frame.iloc[np.unique(codes, return_index=True)[1]]  # one row per group, code order
    # Each group is stratified by its most frequent label (its first row's, on a tie).
    labels = _majority(codes, frame[target]) if stratify else None
    if stratify:
        need = min_rows_per_class(test_size, val_size)
        # Groups holding each class: a class whose rows all share inputs with rows of other
        # classes has none of its own to stratify by.
        counts = pd.Series(codes).groupby(frame[target].to_numpy()).nunique()
        if counts.min() < need:
            rare = ", ".join(f"'{k}' ({v})" for k, v in counts[counts < need].items())
            raise PipelineError(
                f"target '{target}': class(es) {rare} have fewer than {need} distinct rows "
                "(rows with the same inputs count once: they go to one split together); "
                f"a stratified split with test_size {test_size} and val_size {val_size} "
                f"needs at least {need} per class."
            )
    if labels is not None and labels.value_counts().min() < need:
        # A class that is the majority of too few groups (its rows share their inputs with
        # more rows of other classes) cannot stratify the groups; they are split plainly, and
        # the check below makes sure every split still holds every class.
        labels = None
    ids = np.arange(len(groups))
    rest, test = train_test_split(ids, test_size=test_size, stratify=labels, random_state=seed)
    train, val = train_test_split(
        rest,
        test_size=val_size / (1 - test_size),
        stratify=None if labels is None else labels.to_numpy()[rest],
        random_state=seed,
    )
    splits = Splits(*(_rows_of(frame, codes, part) for part in (train, val, test)))
    if stratify:
        classes = set(frame[target].unique())
        for part, rows in (("train", splits.train), ("validation", splits.val),
                           ("test", splits.test)):  # fmt: skip
            missing = classes - set(rows[target].unique())
            if missing:
                shown = ", ".join(f"'{c}'" for c in sorted(map(str, missing))[:4])
                raise PipelineError(
                    f"target '{target}': the {part} split holds no row of class(es) {shown}. "
                    f"The table has {len(groups)} distinct inputs (rows with the same inputs go "
                    "to one split together, so copies never sit on both sides), too few to "
                    "give every split every class: its metrics would be undefined. Add "
                    "features that tell the rows apart, more data, or a larger "
                    "preprocess.test_size / val_size."
                )
    return splits


def _majority(codes: np.ndarray, target: pd.Series) -> pd.Series:
    """The most frequent label of each group, in code order (ties: the first row's label)."""
    pairs = pd.DataFrame({"code": codes, "label": target.to_numpy()})
    counts = pairs.groupby(["code", "label"], sort=False).size().reset_index(name="n")
    counts["order"] = np.arange(len(counts))  # first appearance: the first row's label first
    counts = counts.sort_values(["code", "n", "order"], ascending=[True, False, True])
    return counts.drop_duplicates("code").set_index("code")["label"].reset_index(drop=True)


def _rows_of(frame: pd.DataFrame, codes: np.ndarray, group_ids: np.ndarray) -> pd.DataFrame:
    """The rows of ``group_ids``, in that order (copies of a row next to each other)."""
    rank = np.full(codes.max() + 1, -1)
    rank[group_ids] = np.arange(len(group_ids))
    positions = np.flatnonzero(rank[codes] >= 0)
    positions = positions[np.argsort(rank[codes[positions]], kind="stable")]
    return frame.iloc[positions].reset_index(drop=True)


def fit_preprocessor(train: pd.DataFrame, contract: Contract) -> ColumnTransformer:
    preprocessor = build_preprocessor(contract)
    preprocessor.fit(to_model_frame(train, contract))
    return preprocessor


@cli("preprocess")
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", required=True)
    parser.add_argument("--data", required=True, help="raw table (Parquet)")
    parser.add_argument("--validation", required=True, help="validate's result.json")
    parser.add_argument("--out-dir", required=True, help="where train/val/test.parquet go")
    parser.add_argument("--preprocessor", required=True, help="fitted transformer (joblib)")
    args = parser.parse_args(argv)

    params = load_params(args.params)
    if not read_json(args.validation).get("success"):
        raise PipelineError(f"'{args.validation}' records a failed validation; fix the data.")
    contract = load_contract(params.data.contract)
    p = params.preprocess
    raw = read_table(args.data)
    splits = split_data(
        raw,
        contract.target,
        p.seed,
        p.test_size,
        p.val_size,
        stratify=contract.task.is_classification,
        features=contract.feature_names,
    )
    preprocessor = fit_preprocessor(splits.train, contract)

    out_dir = Path(args.out_dir)
    for name in ("train", "val", "test"):
        write_table(out_dir / f"{name}.parquet", getattr(splits, name))
    with atomic_path(args.preprocessor) as tmp:
        joblib.dump(preprocessor, tmp)
    print(summary(splits, len(preprocessor.get_feature_names_out()), raw, contract.target))
    note = unseen_categories(splits, contract)
    if note:
        print(note)


def summary(splits: Splits, features: int, raw: pd.DataFrame, target: str) -> str:
    """The stage's one line: split sizes, model features, and the rows left out for want of a
    target (the contract's ``max_missing`` may allow some; they are not silently lost)."""
    sizes = ", ".join(f"{n} {len(getattr(splits, n))}" for n in ("train", "val", "test"))
    line = f"preprocess: {sizes} rows; {features} model features"
    unlabelled = int(raw[target].isna().sum())
    if unlabelled:
        line += (
            f"; {unlabelled} of {len(raw)} rows have no '{target}' and are left out of every split"
        )
    return line


def unseen_categories(splits: Splits, contract: Contract) -> str:
    """A note naming, per categorical feature, the categories the validation or test split
    holds and no training row does (the model reads them as unknown, one-hot all zeros), or
    ``""``. On a 51-row table with one three-valued feature each value went to one split whole
    (equal inputs stay together): r2 was -67 with nothing said."""
    found = []
    for name in contract.categorical_features:
        seen = set(category_text(splits.train[name]).dropna())
        held = pd.concat([splits.val[name], splits.test[name]])
        new = sorted(set(category_text(held).dropna()) - seen)
        if new:
            shown = ", ".join(repr(v) for v in new[:3]) + (", ..." if len(new) > 3 else "")
            found.append(f"'{name}' {shown}")
    if not found:
        return ""
    return (
        "preprocess: note: the validation or test split holds categories no training row has, "
        f"which the model can only read as unknown: {'; '.join(found)}. Rows with equal inputs "
        "stay in one split, so on a small table a rare category can land outside train; add "
        "rows, or merge rare categories at the source."
    )


if __name__ == "__main__":
    raise SystemExit(main())
