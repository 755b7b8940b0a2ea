from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd
import pytest
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder

from ml import schema
from ml.features import (
    ONE_HOT_WEIGHT,
    CompiledFeatures,
    build_preprocessor,
    category_prototypes,
    is_validation,
    log_cost,
    normalise_column,
    normalise_text,
    price_key,
    price_keys,
)
from ml.model import build_pipeline


def test_normalisation_keeps_size_punctuation_and_drops_noise() -> None:
    assert normalise_text("  sut silk 3-0, (box)  ") == "SUT SILK 3-0 BOX"
    assert list(normalise_column(pd.Series(["a/b  c", None]))) == ["A/B C", ""]
    assert list(normalise_column(pd.array(["x", pd.NA, "é"], dtype="string"))) == ["X", "", ""]
    assert normalise_text(float("nan")) == ""


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


def _odd_records(sample: pd.DataFrame) -> pd.DataFrame:
    """Real rows plus the awkward cases: unseen and empty values, missing cost, non-ASCII text."""
    frame = schema.coerce(sample, labeled=True)[schema.FEATURE_COLUMNS].head(300).copy()
    frame.loc[0, schema.DEPARTMENT] = "a department never seen in training"
    frame.loc[1, schema.COST] = np.nan
    frame.loc[2, schema.DESCRIPTION] = "straße ßü – naïve 3/0 µm"
    frame.loc[3, schema.DESCRIPTION] = ""
    frame.loc[4, schema.CONTRACT] = "C-77"
    return frame


def _chunks_with_contracts(frame: pd.DataFrame, rows: int, distinct_contracts: int) -> list[pd.DataFrame]:
    """The first ``rows`` rows in chunks of 10, row ``i`` under contract ``i % distinct_contracts``."""
    chunks = []
    for start in range(0, rows, 10):
        chunk = frame.iloc[start : start + 10].copy()
        chunk[schema.CONTRACT] = [f"contract {(start + i) % distinct_contracts}" for i in range(len(chunk))]
        chunks.append(chunk)
    return chunks


def test_compiled_features_equal_the_pipelines_own_transform(purchases_sample: pd.DataFrame, trained_model) -> None:
    frame = _odd_records(purchases_sample)
    expected = trained_model.pipeline[0].transform(frame)
    compiled = CompiledFeatures(trained_model.pipeline[0])
    as_frame = compiled.transform(frame)
    as_lists = compiled.transform({name: frame[name].tolist() for name in schema.FEATURE_COLUMNS})
    assert as_frame.shape == expected.shape
    assert abs(as_frame - expected).max() < 1e-6
    assert abs(as_lists - expected).max() < 1e-6
    one = compiled.transform(frame.iloc[[2]])
    assert abs(one - expected[[2]]).max() < 1e-6


def test_compiled_features_cache_of_contract_department_pairs_is_bounded(
    purchases_sample: pd.DataFrame, trained_model, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(CompiledFeatures, "CACHE_SIZE", 8)
    compiled = CompiledFeatures(trained_model.pipeline[0])
    frame = _odd_records(purchases_sample)
    for chunk in _chunks_with_contracts(frame, rows=60, distinct_contracts=60):
        assert abs(compiled.transform(chunk) - trained_model.pipeline[0].transform(chunk)).max() < 1e-6
        assert len(compiled._pairs) <= 10


def test_compiled_features_shared_by_threads_stay_exact(
    purchases_sample: pd.DataFrame, trained_model, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Dask workers with several threads share one model: cache resets must not break other calls."""
    monkeypatch.setattr(CompiledFeatures, "CACHE_SIZE", 3)
    compiled = CompiledFeatures(trained_model.pipeline[0])
    frame = _odd_records(purchases_sample)
    chunks = _chunks_with_contracts(frame, rows=200, distinct_contracts=7)
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(compiled.transform, chunks * 5))
    for chunk, result in zip(chunks * 5, results, strict=True):
        assert abs(result - trained_model.pipeline[0].transform(chunk)).max() < 1e-6


def test_compiled_features_refuse_a_layout_they_do_not_reproduce(purchases_sample: pd.DataFrame) -> None:
    frame = schema.coerce(purchases_sample.head(300), labeled=True)
    plain_tf = build_pipeline({"features__description__featureunion__words__sublinear_tf": False})
    plain_tf.fit(frame[schema.FEATURE_COLUMNS], frame[schema.CATEGORY])
    with pytest.raises(ValueError, match="unsupported text features"):
        CompiledFeatures(plain_tf[0])


def test_price_key_reads_missing_parts_as_empty() -> None:
    assert price_key("Davie Medical Center", 20) == "Davie Medical Center|20.00"
    assert price_key(pd.NA, float("nan")) == "|"
    assert price_key(None, None) == "|"


def test_compiled_features_serve_a_model_registered_with_facility_features(purchases_sample: pd.DataFrame) -> None:
    """Models registered before the facility-keyed blocks were dropped keep serving, exactly."""
    frame = schema.coerce(purchases_sample.head(300), labeled=True)
    registered = build_preprocessor(min_df=2)
    price = make_pipeline(FunctionTransformer(price_keys), OneHotEncoder(handle_unknown="ignore", min_frequency=2))
    registered.set_params(
        transformers=[
            ("description", registered.transformers[0][1], schema.DESCRIPTION),
            (
                "categorical",
                OneHotEncoder(min_frequency=5, handle_unknown="ignore"),
                [schema.CONTRACT, schema.DEPARTMENT],
            ),
            ("price", price, [schema.DEPARTMENT, schema.COST]),
            ("cost", registered.transformers[-1][1], [schema.COST]),
        ],
        transformer_weights={"price": ONE_HOT_WEIGHT},
    ).fit(frame[schema.FEATURE_COLUMNS])
    odd = _odd_records(purchases_sample)
    odd.loc[5:, schema.DEPARTMENT] = frame[schema.DEPARTMENT].iloc[5:]  # known prices at known facilities
    expected = registered.transform(odd)
    assert expected[:, registered.output_indices_["price"]].nnz > 100
    assert abs(CompiledFeatures(registered).transform(odd) - expected).max() < 1e-6


def test_no_feature_keys_on_the_facility(purchases_sample: pd.DataFrame) -> None:
    """At a facility the model has never seen, the department is all it changes: the features must not."""
    frame = schema.coerce(purchases_sample.head(300), labeled=True)[schema.FEATURE_COLUMNS]
    preprocessor = build_preprocessor(min_df=2).fit(frame)
    elsewhere = frame.assign(department="a hospital never seen in training")
    assert abs(preprocessor.transform(elsewhere) - preprocessor.transform(frame)).max() == 0


def test_category_prototypes_score_the_character_cosine_of_name_and_description(purchases_sample) -> None:
    frame = schema.coerce(purchases_sample, labeled=True)[schema.FEATURE_COLUMNS]
    preprocessor = build_preprocessor(min_df=2).fit(frame)
    names = np.array(["OTHER IMAGING SERVICES - SCREENING MAMMOGRAPHY", "Laboratory - Chemistry"], dtype=object)
    prototypes = category_prototypes(preprocessor, names)
    mammogram = {"description": "SCREENING MAMMOGRAM BILAT", "cost": 135.0, "contract": None, "department": "X"}
    records = pd.concat([frame.head(40), pd.DataFrame([mammogram])], ignore_index=True)
    chars = preprocessor.named_transformers_["description"][-1].transformer_list[0][1]
    cosine = chars.transform(normalise_column(records["description"])) @ chars.transform(normalise_column(names)).T
    # every other block of the records (department, cost, price, words) is non-zero somewhere, so
    # a prototype value outside the character block would show here
    product = preprocessor.transform(records) @ prototypes.T
    assert abs(product - cosine).max() < 1e-6
    assert cosine[-1, 0] > 0.3 and cosine[-1, 0] > 3 * cosine[-1, 1]
    np.testing.assert_allclose(np.sqrt(prototypes.multiply(prototypes).sum(axis=1)).A1, 1.0, rtol=1e-5)


def test_category_prototypes_refuse_a_weighted_character_block(purchases_sample: pd.DataFrame) -> None:
    frame = schema.coerce(purchases_sample.head(300), labeled=True)[schema.FEATURE_COLUMNS]
    weighted = build_preprocessor(min_df=2).set_params(description__featureunion__transformer_weights={"chars": 2.0})
    with pytest.raises(ValueError, match="unweighted character block"):
        category_prototypes(weighted.fit(frame), ["LABORATORY - CHEMISTRY"])


def test_compact_vectorizer_stores_its_vocabulary_as_arrays_and_restores_it() -> None:
    import pickle

    from ml import artifacts
    from ml.features import CompactTfidfVectorizer

    texts = ["SUT SILK 3-0", "GLOVE NITRILE LG", "SUT VICRYL 4-0", "élan ünïcode"]
    fitted = CompactTfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4)).fit(texts)
    state = fitted.__getstate__()
    assert "vocabulary_" not in state and isinstance(state["vocabulary_text_"], str)
    for copy in (
        pickle.loads(pickle.dumps(fitted)),
        artifacts.loads(artifacts.dumps(fitted), artifacts.SKOPS, allow_pickle=False, label="test"),
    ):
        assert copy.vocabulary_ == fitted.vocabulary_
        assert (copy.transform(texts) != fitted.transform(texts)).nnz == 0
    state["vocabulary_ends_"] = state["vocabulary_ends_"][:-1]
    with pytest.raises(ValueError, match="do not match"):
        CompactTfidfVectorizer().__setstate__(state)
