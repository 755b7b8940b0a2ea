"""The same CLI on another labelled domain, the final fit on every row, the gate's like-for-like rule,
and leave-one-facility-out evaluation.

The other domain is medical devices named with their manufacturer in ``contract`` and no cost or
department: every column the purchase data fills but ``description`` and ``contract`` is empty for
every row, exported in Windows-1252 as hospital systems often do.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ml import schema
from ml.errors import ExitCode
from ml.features import build_preprocessor, is_validation
from ml.jobs.evaluate import leave_one_group_out
from ml.model import build_baseline, fit_model
from ml.registry import HASH_SPLIT_ESTIMATE, ModelRegistry
from tests.ml.test_train import ml  # the CLI as a process, without a Dask scheduler

#: category -> (ways a line names the kind of device, manufacturers that make it)
DEVICES = {
    "INFUSION PUMPS": (["INFUSION PUMP", "INF PUMP", "PUMP INFUSION LVP", "SYRINGE PUMP"], ["BAXTER", "BD", "B BRAUN"]),
    "VENTILATORS": (["VENTILATOR", "VENT ICU", "VENTILATOR TRANSPORT"], ["DRAEGER", "HAMILTON", "MEDTRONIC"]),
    "DEFIBRILLATORS": (["DEFIBRILLATOR", "DEFIB AED", "AED TRAINER UNIT"], ["ZOLL", "PHILIPS", "STRYKER"]),
    "PATIENT MONITORS": (["PATIENT MONITOR", "MONITOR VITAL SIGNS", "MON BEDSIDE"], ["PHILIPS", "GE HEALTHCARE"]),
    "ULTRASOUND SYSTEMS": (["ULTRASOUND SYSTEM", "US PORTABLE", "ULTRASOUND PROBE"], ["GE HEALTHCARE", "SIEMENS"]),
    "SURGICAL STAPLERS": (["STAPLER SURGICAL", "STAPLER LINEAR", "STPLR CIRC"], ["MEDTRONIC", "ETHICON"]),
    "HOSPITAL BEDS": (["BED ICU", "BED MED/SURG", "STRETCHER BED"], ["HILLROM", "STRYKER"]),
    "ELECTROSURGICAL UNITS": (["ELECTROSURGICAL GEN", "ESU GENERATOR", "BOVIE PENCIL"], ["MEDTRONIC", "CONMED"]),
}


def device_records(n: int, seed: int, prefix: str) -> pd.DataFrame:
    """``n`` labelled device lines: kind, manufacturer, a model code; no cost, no department."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        category = list(DEVICES)[i % len(DEVICES)]
        kinds, makers = DEVICES[category]
        maker = str(rng.choice(makers))
        code = f"{rng.choice(list('ABCDFGHKMPRSTX'))}{rng.integers(100, 9999)}"
        kind = str(rng.choice(kinds))
        words = [kind, code] if rng.random() < 0.5 else [code, kind]
        if rng.random() < 0.5:
            words.insert(0, maker.split()[0][:4])
        if rng.random() < 0.2:
            words.append("Ø" + str(rng.integers(5, 40)) + "MM")  # a Windows-1252-only character
        rows.append((f"{prefix}-{i:05d}", " ".join(words), "", maker, "", category))
    return pd.DataFrame(rows, columns=schema.LABELED_COLUMNS)


@pytest.mark.slow
def test_device_names_train_a_sound_model_on_every_row_with_no_code_change(tmp_path: Path) -> None:
    train = device_records(480, seed=1, prefix="dev")
    # a category whose only lines fall in the validation split: only a fit on every row learns it
    candidates = pd.Series([f"CART LEAD APRON {code}" for code in range(200)])
    rare = candidates[is_validation(candidates)][:3]
    train = pd.concat(
        [
            train,
            pd.DataFrame(
                {
                    "id": [f"rare-{i}" for i in range(3)],
                    "description": rare.to_numpy(),
                    "cost": "",
                    "contract": "INFAB",
                    "department": "",
                    "category": "LEAD APRONS",
                }
            ),
        ],
        ignore_index=True,
    )
    data, held_out = tmp_path / "devices.csv", tmp_path / "devices-new.csv"
    train.to_csv(data, index=False, encoding="cp1252")
    device_records(240, seed=2, prefix="new").to_csv(held_out, index=False, encoding="cp1252")
    store = str(tmp_path / "store")

    refused = ml("train", "--data", str(data), "--store", store, "--no-search")
    assert refused.returncode == ExitCode.BAD_INPUT and "--encoding cp1252" in refused.stderr

    result = ml("train", "--data", str(data), "--store", store, "--no-search", "--encoding", "cp1252")
    assert result.returncode == ExitCode.OK, result.stderr
    registry = ModelRegistry(store)
    meta = registry.metadata()
    assert meta["metrics"]["estimate"] == HASH_SPLIT_ESTIMATE
    estimated = meta["metrics"]["per_class"]  # lead aprons: only in the validation split, unknown to the estimate
    assert estimated["LEAD APRONS"]["recall"] == 0 and all(estimated[c]["recall"] > 0.9 for c in DEVICES)
    assert meta["data"]["train_rows"] == len(train)
    assert meta["data"]["estimate_rows"] + meta["data"]["validation_rows"] == len(train)
    model = registry.load().pipeline
    aprons = schema.coerce(train[train.category == "LEAD APRONS"], labeled=True)
    assert (model.predict(aprons[schema.FEATURE_COLUMNS]) == "LEAD APRONS").all()

    evaluated = ml(
        "evaluate",
        "--model",
        store,
        "--data",
        str(held_out),
        "--encoding",
        "cp1252",
        "--json",
        "--plot",
        str(tmp_path / "cm.png"),
    )
    assert evaluated.returncode == ExitCode.OK, evaluated.stderr
    scores = json.loads(evaluated.stdout)
    new = schema.coerce(schema.read_records(str(held_out), encoding="cp1252"), labeled=True)
    known = schema.coerce(train, labeled=True)
    baseline = build_baseline().fit(known[schema.FEATURE_COLUMNS], known[schema.CATEGORY])
    baseline_accuracy = pd.Series(baseline.predict(new[schema.FEATURE_COLUMNS]) == new[schema.CATEGORY]).mean()
    assert scores["accuracy"] > 0.9 and scores["accuracy"] >= baseline_accuracy - 0.02


def test_a_column_empty_in_every_row_is_a_constant_and_contract_is_used(tmp_path: Path) -> None:
    """An empty cost adds the same numbers to every row (it can shift no decision); contract is used."""
    frame = schema.coerce(device_records(200, seed=3, prefix="d"), labeled=True)
    preprocessor = build_preprocessor(min_df=2).fit(frame[schema.FEATURE_COLUMNS], frame[schema.CATEGORY])
    features = preprocessor.transform(frame[schema.FEATURE_COLUMNS]).toarray()
    cost = features[:, preprocessor.output_indices_["cost"]]
    assert cost.shape[1] > 0 and (cost == cost[0]).all()
    manufacturers = features[:, preprocessor.output_indices_["categorical"]]
    assert manufacturers.shape[1] == frame[schema.CONTRACT].nunique() and (manufacturers.sum(axis=1) == 1).all()
    model = fit_model(frame)
    assert set(model.classes_) == set(DEVICES)


def test_gate_compares_only_estimates_made_the_same_way(tmp_path: Path, trained_model) -> None:
    registry = ModelRegistry(str(tmp_path / "store"))
    older = registry.save(trained_model.pipeline, {"metrics": {"accuracy": 0.9, "macro_f1": 0.6}})
    registry.promote(older)  # metadata from before estimates were labelled: scored on the hash split
    assert registry.gate({"macro_f1": 0.6, "estimate": HASH_SPLIT_ESTIMATE}, tolerance=0.01).promoted
    assert not registry.gate({"macro_f1": 0.5, "estimate": HASH_SPLIT_ESTIMATE}, tolerance=0.01).promoted
    other = registry.gate({"macro_f1": 0.9, "estimate": "grouped-cv-5"}, tolerance=0.01)
    assert not other.promoted and "not comparable" in other.reason


@pytest.mark.slow
def test_leave_one_facility_out_scores_each_facility_with_a_model_that_never_saw_it(
    purchases_sample: pd.DataFrame, tmp_path: Path
) -> None:
    frame = schema.coerce(purchases_sample, labeled=True)
    seen: dict[str, set[str]] = {}

    def remembering(train: pd.DataFrame) -> object:
        seen[frame[~frame.id.isin(train.id)].department.iloc[0]] = set(train.department)
        return build_baseline().fit(train[schema.FEATURE_COLUMNS], train[schema.CATEGORY])

    results = leave_one_group_out(frame, schema.DEPARTMENT, {"baseline": remembering})
    facilities = sorted(frame.department.unique())
    assert results["held_out"].tolist() == facilities
    assert all(held not in seen[held] and len(seen[held]) == len(facilities) - 1 for held in facilities)
    # every row of the held-out facility is counted; only those with a description new to it are scored
    by_facility = results.set_index("held_out")
    assert by_facility["fold_rows"].to_dict() == frame.department.value_counts().to_dict()
    assert (by_facility["rows"] <= by_facility["fold_rows"]).all()

    path = tmp_path / "sample.csv"
    purchases_sample.to_csv(path, index=False)
    result = ml("evaluate", "--data", str(path), "--by", "department", "--json")
    assert result.returncode == ExitCode.OK, result.stderr
    report = json.loads(result.stdout)
    folds = pd.DataFrame(report["folds"])
    assert sorted(folds.recipe.unique()) == ["baseline", "model"] and set(folds.held_out) == set(facilities)
    for recipe in ("baseline", "model"):
        assert report["mean"][f"{recipe} macro_f1"] == pytest.approx(folds[folds.recipe == recipe].macro_f1.mean())
    assert report["mean"]["model macro_f1"] > 0.5

    one_facility = purchases_sample.assign(department="Only Hospital")
    one_facility.to_csv(path, index=False)
    refused = ml("evaluate", "--data", str(path), "--by", "department")
    assert refused.returncode == ExitCode.BAD_INPUT and "at least two distinct values of department" in refused.stderr
