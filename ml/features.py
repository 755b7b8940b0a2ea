"""Feature engineering: text normalisation, the hash split and the column transformer.

Purchase text is abbreviated and noisy (``SUT SILK 3-0 SA74H``), so the description is read as
character n-grams within words (robust to abbreviations and typos) plus word uni/bigrams (whole
tokens such as ``SUTURE`` or ``CATH`` are strong signals on their own).
"""

from __future__ import annotations

import hashlib
import re

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.pipeline import FeatureUnion, make_pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler

from ml.schema import CONTRACT, COST, DEPARTMENT, DESCRIPTION

_NOT_WORD = re.compile(r"[^0-9A-Z/.%+-]+")
_SPACES = re.compile(r"\s+")


def normalise_text(text: str) -> str:
    """Upper-case, keep letters, digits and the punctuation that carries meaning in sizes."""
    return _SPACES.sub(" ", _NOT_WORD.sub(" ", str(text).upper())).strip()


def normalise_column(values: pd.Series | np.ndarray) -> np.ndarray:
    """Vectorised :func:`normalise_text` over a column (used inside the pipeline)."""
    series = pd.Series(np.asarray(values).ravel(), dtype="string").fillna("")
    normalised = series.str.upper().str.replace(_NOT_WORD, " ", regex=True)
    return normalised.str.replace(_SPACES, " ", regex=True).str.strip().to_numpy(dtype=object)


def is_validation(descriptions: pd.Series, share: float = 0.2) -> np.ndarray:
    """Stable train/validation assignment by a hash of the normalised description.

    The same text always lands on the same side, in every run and on every machine, so the
    validation score measures descriptions the model has not seen.
    """
    buckets = [
        int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big") % 10_000
        for text in normalise_column(descriptions)
    ]
    return np.asarray(buckets) < share * 10_000


def log_cost(values: pd.DataFrame | np.ndarray) -> np.ndarray:
    """log1p of the cost with a missing flag; a missing cost is informative, not zero."""
    cost = np.asarray(values, dtype="float64").reshape(-1, 1)
    missing = np.isnan(cost)
    return np.hstack([np.log1p(np.where(missing, 0.0, np.clip(cost, 0, None))), missing.astype("float64")])


def build_preprocessor(*, char_ngram_max: int = 5, word_ngram_max: int = 2, min_df: int = 1) -> ColumnTransformer:
    """The column transformer shared by training and serving (it is part of the pickled model)."""
    description = make_pipeline(
        FunctionTransformer(normalise_column, feature_names_out="one-to-one"),
        FeatureUnion(
            [
                (
                    "chars",
                    TfidfVectorizer(
                        analyzer="char_wb",
                        ngram_range=(2, char_ngram_max),
                        sublinear_tf=True,
                        min_df=min_df,
                        lowercase=False,
                        dtype=np.float32,
                    ),
                ),
                (
                    "words",
                    TfidfVectorizer(
                        analyzer="word",
                        ngram_range=(1, word_ngram_max),
                        token_pattern=r"[^ ]+",
                        sublinear_tf=True,
                        lowercase=False,
                        dtype=np.float32,
                    ),
                ),
            ]
        ),
    )
    categorical = OneHotEncoder(handle_unknown="ignore", min_frequency=5)
    cost = make_pipeline(FunctionTransformer(log_cost), StandardScaler())
    return ColumnTransformer(
        [
            ("description", description, DESCRIPTION),
            ("categorical", categorical, [CONTRACT, DEPARTMENT]),
            ("cost", cost, [COST]),
        ],
        sparse_threshold=1.0,
    )
