"""Feature engineering: text normalisation, the hash split and the column transformer.

Purchase text is abbreviated and noisy (``SUT SILK 3-0 SA74H``), so the description is read as
character n-grams within words (robust to abbreviations and typos) plus word uni/bigrams (whole
tokens such as ``SUTURE`` or ``CATH`` are strong signals on their own). Where a word stands counts
too: chargemaster lines lead with the item's kind (``PT EVAL``, ``CATH``) and often end with its
form or size, so the first and the last word are features of their own.

Nothing keys on the facility (``department``): the model is used at facilities it has never seen,
where such a feature is silent, and a model that leaned on it during training is worse there. With
each facility held out in turn (``ml evaluate --by department``), removing the department one-hot
and the ``department|cost`` price block gained macro-F1 +0.007 at the two large facilities and
+0.001 on the mean of all five (accuracy +0.002); giving the price block a quarter of its weight, or
blanking the department of half the training rows, did not recover that. At a known facility (the
shipped hash split) the two blocks were worth accuracy +0.002 and macro-F1 −0.005: nothing to keep.

Category names are knowledge too: ``OTHER IMAGING SERVICES - SCREENING MAMMOGRAPHY`` says what a
``SCREENING MAMMOGRAM BILAT`` line is even when no training line was worded like it, so each name
becomes a row of the feature space (:func:`category_prototypes`) that the classifier adds to its
weights.
"""

from __future__ import annotations

import hashlib
import re
from itertools import chain, repeat
from typing import Any, cast

import numpy as np
import pandas as pd
from joblib import parallel_config
from scipy import sparse
from sklearn.compose import ColumnTransformer
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.pipeline import FeatureUnion, make_pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler
from sklearn.utils.validation import check_is_fitted

from ml.schema import CONTRACT, COST, DEPARTMENT, DESCRIPTION

_NOT_WORD = re.compile(r"[^0-9A-Z/.%+-]+")
_SPACES = re.compile(r"\s+")


#: Weight of the word-position one-hot blocks (and of the price block of models registered with one)
#: against the unit-length TF-IDF blocks.
#: At 1.0 the first word alone outweighed the description's n-grams and accuracy fell; over nine
#: re-drawn hash splits 0.5 did best (0.35 lower macro-F1, 0.7 lower accuracy).
ONE_HOT_WEIGHT = 0.5


def _missing(value: object) -> bool:
    return value is None or value is pd.NA or value != value


def normalise_text(text: object) -> str:
    """Upper-case, keep letters, digits and the punctuation that carries meaning in sizes.

    A missing value (None, NA, NaN) is the empty text.
    """
    if _missing(text):
        return ""
    return _SPACES.sub(" ", _NOT_WORD.sub(" ", str(text).upper())).strip()


def normalise_column(values: pd.Series | np.ndarray) -> np.ndarray:
    """:func:`normalise_text` over a column (the pipeline's first step, so serving matches training)."""
    return np.array([normalise_text(text) for text in np.asarray(values, dtype=object).ravel()], dtype=object)


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


def first_word(text: str) -> list[str]:
    """The analyzer of the first-word block: the (normalised) description's first word, if any."""
    return text.split()[:1]


def last_word(text: str) -> list[str]:
    """The analyzer of the last-word block."""
    return text.split()[-1:]


def price_key(department: object, cost: object) -> str:
    """``department|cost`` of one record, cost to the cent; a missing part reads as empty.

    Only models registered with the price block use it (their pickles refer to :func:`price_keys`);
    new models have no facility-keyed features.
    """
    facility = "" if _missing(department) else str(department)
    price = "" if _missing(cost) else f"{float(cost):.2f}"  # type: ignore[arg-type]
    return f"{facility}|{price}"


def price_keys(values: pd.DataFrame | np.ndarray) -> np.ndarray:
    """:func:`price_key` of each (department, cost) row, as the one column the encoder reads."""
    keys = [price_key(department, cost) for department, cost in np.asarray(values, dtype=object)]
    return np.array(keys, dtype=object).reshape(-1, 1)


def log_cost(values: pd.DataFrame | np.ndarray) -> np.ndarray:
    """log1p of the cost with a missing flag; a missing cost is informative, not zero."""
    cost = np.asarray(values, dtype="float64").reshape(-1, 1)
    missing = np.isnan(cost)
    return np.hstack([np.log1p(np.where(missing, 0.0, np.clip(cost, 0, None))), missing.astype("float64")])


class SequentialColumnTransformer(ColumnTransformer):
    """A ``ColumnTransformer`` whose parts always run one after the other, in this process.

    The search and the final fit run inside joblib's Dask backend, which hands *every* nested
    ``Parallel`` call to the cluster whatever its ``n_jobs`` (and a Dask task runs its nested calls
    under that backend too). Left alone, each part's fit and transform became a small Dask task
    that shipped the rows back and forth and piled onto workers already busy with a fit: the
    search's fits ran three times slower on a worker than in one process.
    """

    def fit_transform(self, X: Any, y: Any = None, **params: Any) -> Any:
        with parallel_config(backend="sequential"):
            return super().fit_transform(X, y, **params)

    def transform(self, X: Any, **params: Any) -> Any:
        with parallel_config(backend="sequential"):
            return super().transform(X, **params)


class CompactTfidfVectorizer(TfidfVectorizer):
    """``TfidfVectorizer`` whose fitted vocabulary is stored as one string and an array of offsets.

    skops stores a dict one entry at a time: with the ~86,000 n-grams of a full model that took 6 s
    to write and 2.7 s to load, ten times joblib. Stored as one string, the term ends and the column
    of each term, it is three values. Fitting and transforming are ``TfidfVectorizer``'s.
    """

    def __getstate__(self) -> dict[str, Any]:
        state = dict(super().__getstate__())
        vocabulary = state.pop("vocabulary_", None)
        if vocabulary is not None:
            terms = list(vocabulary)
            state["vocabulary_text_"] = "".join(terms)
            state["vocabulary_ends_"] = np.cumsum([len(t) for t in terms], dtype=np.int64)
            state["vocabulary_columns_"] = np.fromiter(vocabulary.values(), dtype=np.int64, count=len(terms))
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state = dict(state)
        text = state.pop("vocabulary_text_", None)
        if text is not None:
            ends = state.pop("vocabulary_ends_").tolist()
            starts = [0, *ends[:-1]]
            columns = state.pop("vocabulary_columns_").tolist()
            if len(ends) != len(columns) or (ends and ends[-1] != len(text)):
                raise ValueError("a stored vocabulary's terms and columns do not match")
            state["vocabulary_"] = {text[a:b]: c for a, b, c in zip(starts, ends, columns, strict=True)}
        super().__setstate__(state)


def build_preprocessor(
    *, char_ngram_max: int = 5, word_ngram_max: int = 2, min_df: int = 1
) -> SequentialColumnTransformer:
    """The column transformer shared by training and serving (it is part of the pickled model)."""
    description = make_pipeline(
        FunctionTransformer(normalise_column, feature_names_out="one-to-one"),
        FeatureUnion(
            [
                (
                    "chars",
                    CompactTfidfVectorizer(
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
                    CompactTfidfVectorizer(
                        analyzer="word",
                        ngram_range=(1, word_ngram_max),
                        token_pattern=r"[^ ]+",
                        sublinear_tf=True,
                        lowercase=False,
                        dtype=np.float32,
                    ),
                ),
                # one word per row, so TF-IDF with unit length is a one-hot of the words seen twice
                (
                    "first_word",
                    CompactTfidfVectorizer(analyzer=first_word, sublinear_tf=True, min_df=2, dtype=np.float32),
                ),
                (
                    "last_word",
                    CompactTfidfVectorizer(analyzer=last_word, sublinear_tf=True, min_df=2, dtype=np.float32),
                ),
            ],
            transformer_weights={"first_word": ONE_HOT_WEIGHT, "last_word": ONE_HOT_WEIGHT},
        ),
    )
    categorical = OneHotEncoder(handle_unknown="ignore", min_frequency=5)
    cost = make_pipeline(FunctionTransformer(log_cost), StandardScaler())
    return SequentialColumnTransformer(
        [
            ("description", description, DESCRIPTION),
            ("categorical", categorical, [CONTRACT]),
            ("cost", cost, [COST]),
        ],
        sparse_threshold=1.0,
    )


def category_prototypes(preprocessor: ColumnTransformer, categories: Any) -> sparse.csr_matrix:
    """Each category name read as a description, in the character n-gram block only.

    A row's product with a record's features is the cosine of the two texts' character n-gram
    TF-IDF vectors (both unit length, the block's weight is 1), so adding these rows to the
    classifier's weights favours categories whose name the description resembles. Only the
    character block: the word, position, price and other blocks of a name mean nothing or are the
    same for every category, and with them the prior did worse on the re-drawn splits.
    """
    check_is_fitted(preprocessor)
    union = preprocessor.named_transformers_["description"][-1]
    name, chars = union.transformer_list[0]
    if name != "chars" or (union.transformer_weights or {}).get(name, 1.0) != 1.0:
        raise ValueError("category prototypes need the unweighted character block first in the description's features")
    grams = chars.transform(normalise_column(np.asarray(categories, dtype=object))).tocoo()
    start = preprocessor.output_indices_["description"].start
    return sparse.csr_matrix(
        (grams.data, (grams.row, grams.col + start)),
        shape=(grams.shape[0], output_width(preprocessor)),
        dtype=np.float32,
    )


def output_width(preprocessor: ColumnTransformer) -> int:
    """Width of a fitted preprocessor's output."""
    return max(indices.stop for indices in preprocessor.output_indices_.values())


class CompiledFeatures:
    """A fitted :func:`build_preprocessor`'s ``transform``, without its per-call overhead.

    ``ColumnTransformer.transform`` spends ~10 ms per call on validation, pandas indexing and
    joblib dispatch whatever the row count, which dominates serving one record. This reads the
    fitted parts (n-gram analyzers, vocabularies, idf weights, one-hot columns, the cost scaler)
    and builds the same matrix from plain column lists; tests hold it equal to ``transform``.
    """

    #: Distinct values of the one-hot columns (contract; and department in models registered with it)
    #: remembered; bounded so odd input cannot grow memory.
    CACHE_SIZE = 4096

    def __init__(self, preprocessor: ColumnTransformer) -> None:
        check_is_fitted(preprocessor)
        parts = preprocessor.named_transformers_
        union = parts["description"][-1]
        offset = preprocessor.output_indices_["description"].start
        self._text: list[tuple[Any, dict[str, int], np.ndarray, np.float32, int]] = []
        for name, vectorizer in union.transformer_list:
            if not (vectorizer.sublinear_tf and vectorizer.use_idf and vectorizer.norm == "l2"):
                raise ValueError(f"unsupported text features {vectorizer!r}")
            idf = vectorizer.idf_.astype(np.float32)
            scale = np.float32((union.transformer_weights or {}).get(name, 1.0))
            self._text.append((vectorizer.build_analyzer(), vectorizer.vocabulary_, idf, scale, offset))
            offset += len(idf)
        self._encoder: OneHotEncoder = parts["categorical"]
        self._categorical_columns = list(self._encoder.feature_names_in_)
        self._categorical_offset = preprocessor.output_indices_["categorical"].start
        self._pairs: dict[tuple[str, ...], np.ndarray] = {}
        # only models registered with the price block have one; they keep serving until retrained
        self._prices: dict[str, int] = {}
        self._price_weight = np.float32((preprocessor.transformer_weights or {}).get("price", 1.0))
        if "price" in parts and parts["price"] != "drop":
            keys_step, encoder = parts["price"]
            if keys_step.func is not price_keys:
                raise ValueError(f"unsupported price features {keys_step!r}")
            # every key seen in training has exactly one column (its own or the infrequent one)
            known = encoder.categories_[0]
            columns = encoder.transform(known.reshape(-1, 1)).tocsr().indices
            start = preprocessor.output_indices_["price"].start
            self._prices = dict(zip(known.tolist(), (columns + start).tolist(), strict=True))
        log_step, scaler = parts["cost"]
        if log_step.func is not log_cost:
            raise ValueError(f"unsupported cost features {log_step!r}")
        self._cost_mean, self._cost_scale = scaler.mean_, scaler.scale_
        self._cost_offset = preprocessor.output_indices_["cost"].start
        self.n_features = output_width(preprocessor)

    def transform(self, records: Any) -> sparse.csr_matrix:
        """Feature matrix of ``records`` (a DataFrame or a mapping of column lists), float32 CSR."""
        descriptions = [normalise_text(text) for text in records[DESCRIPTION]]
        n = len(descriptions)
        rows: list[np.ndarray] = []
        columns: list[np.ndarray] = []
        values: list[np.ndarray] = []
        for analyzer, vocabulary, idf, scale, offset in self._text:
            grams = [analyzer(text) for text in descriptions]
            sizes = np.fromiter(map(len, grams), dtype=np.int64, count=n)
            found = np.fromiter(
                map(vocabulary.get, chain.from_iterable(grams), repeat(-1)), dtype=np.int64, count=int(sizes.sum())
            )
            gram_row = np.repeat(np.arange(n), sizes)[found >= 0]
            # (row, column) pairs counted in one sort; rows come out in order
            pair, tf = np.unique(gram_row * len(idf) + found[found >= 0], return_counts=True)
            row, index = np.divmod(pair, len(idf))
            weight = (np.log(tf, dtype=np.float32) + 1) * idf[index]
            norms = np.sqrt(np.bincount(row, weights=weight.astype(np.float64) ** 2, minlength=n))
            rows.append(row)
            columns.append(index + offset)
            values.append(weight / norms[row].astype(np.float32) * scale)
        if self._prices:
            price_columns = np.fromiter(
                (
                    self._prices.get(price_key(department, cost), -1)
                    for department, cost in zip(records[DEPARTMENT], records[COST], strict=True)
                ),
                dtype=np.int64,
                count=n,
            )
            rows.append(np.flatnonzero(price_columns >= 0))
            columns.append(price_columns[price_columns >= 0])
            values.append(np.full(len(columns[-1]), self._price_weight, dtype=np.float32))
        pairs = list(zip(*(records[column] for column in self._categorical_columns), strict=True))
        hot = self._one_hot(pairs)
        sizes = np.fromiter((len(hot[p]) for p in pairs), dtype=np.int64, count=n)
        rows.append(np.repeat(np.arange(n), sizes))
        columns.append(np.concatenate([hot[p] for p in pairs]) if n else np.zeros(0, dtype=np.int64))
        values.append(np.ones(len(columns[-1]), dtype=np.float32))
        cost = (log_cost(np.asarray(records[COST], dtype="float64")) - self._cost_mean) / self._cost_scale
        rows.append(np.repeat(np.arange(n), cost.shape[1]))
        columns.append(np.tile(np.arange(cost.shape[1]) + self._cost_offset, n))
        values.append(cost.astype(np.float32).ravel())
        matrix = sparse.coo_matrix(
            (np.concatenate(values), (np.concatenate(rows), np.concatenate(columns))), shape=(n, self.n_features)
        )
        return matrix.tocsr()

    def _one_hot(self, pairs: list[tuple[str, ...]]) -> dict[tuple[str, ...], np.ndarray]:
        """Output columns of each distinct tuple of the encoder's columns; unseen ones go through it once.

        Safe when Dask worker threads share one model: lookups never assume what another call cached.
        """
        known = {pair: self._pairs.get(pair) for pair in set(pairs)}
        missing = sorted(pair for pair, found in known.items() if found is None)
        if not missing:
            return cast(dict[tuple[str, ...], np.ndarray], known)
        encoded = self._encoder.transform(pd.DataFrame(missing, columns=self._categorical_columns)).tocsr()
        new = {
            pair: encoded.indices[encoded.indptr[i] : encoded.indptr[i + 1]] + self._categorical_offset
            for i, pair in enumerate(missing)
        }
        if len(self._pairs) + len(new) > self.CACHE_SIZE:
            self._pairs = {}
        self._pairs.update(new)
        return cast(dict[tuple[str, ...], np.ndarray], {**known, **new})
