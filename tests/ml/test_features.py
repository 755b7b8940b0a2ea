from __future__ import annotations

import numpy as np
import pandas as pd

from ml.features import is_validation, log_cost, normalise_column, normalise_text


def test_normalisation_keeps_size_punctuation_and_drops_noise() -> None:
    assert normalise_text("  sut silk 3-0, (box)  ") == "SUT SILK 3-0 BOX"
    assert list(normalise_column(pd.Series(["a/b  c", None]))) == ["A/B C", ""]


def test_split_is_stable_and_never_splits_one_description(full_data: pd.DataFrame) -> None:
    mask = is_validation(full_data["description"])
    assert np.array_equal(mask, is_validation(full_data["description"]))
    assert 0.17 < mask.mean() < 0.23
    key = normalise_column(full_data["description"])
    assert not set(key[mask]) & set(key[~mask])


def test_split_ignores_case_and_spacing() -> None:
    variants = pd.Series([f"Variant Text {i}" for i in range(200)])
    shouted = variants.str.upper().str.replace(" ", "   ")
    assert np.array_equal(is_validation(variants), is_validation(shouted))


def test_log_cost_flags_missing_instead_of_treating_it_as_free() -> None:
    out = log_cost(np.array([[0.0], [np.nan], [99.0]]))
    assert out[:, 1].tolist() == [0.0, 1.0, 0.0]
    assert out[2, 0] == np.log1p(99.0)
