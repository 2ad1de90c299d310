"""The learning task: decided by the contract's target column, never by a separate switch.

A categorical target makes a classification task (binary with two classes, multiclass with
more); a numeric target makes a regression task. Every stage and the server ask the task,
never test strings of their own.
"""

from __future__ import annotations

from enum import StrEnum


class Task(StrEnum):
    BINARY = "binary"
    MULTICLASS = "multiclass"
    REGRESSION = "regression"

    @property
    def is_classification(self) -> bool:
        return self is not Task.REGRESSION

    @property
    def is_regression(self) -> bool:
        return self is Task.REGRESSION

    @classmethod
    def for_target(cls, target_type: str, n_classes: int | None = None) -> Task:
        """The task of a target column of contract type ``target_type`` (``numeric`` or
        ``categorical``); ``n_classes`` tells binary from multiclass."""
        if target_type == "numeric":
            return cls.REGRESSION
        if target_type != "categorical":
            raise ValueError(f"unknown target type {target_type!r}: numeric or categorical")
        if n_classes is not None and n_classes < 2:
            raise ValueError(f"a classification target needs at least 2 classes, got {n_classes}")
        return cls.BINARY if n_classes == 2 else cls.MULTICLASS

    @classmethod
    def parse(cls, value: str) -> Task:
        try:
            return cls(value)
        except ValueError:
            names = ", ".join(t.value for t in cls)
            raise ValueError(f"unknown task {value!r}: one of {names}") from None
