"""``ml train --candidate``: the gated version becomes CANDIDATE and LATEST stays where it was."""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd
import pytest

from ml.jobs.train import train
from ml.registry import ModelRegistry

pytestmark = pytest.mark.slow


def test_train_candidate_writes_candidate_not_latest(
    store_with_model: Callable[..., ModelRegistry], purchases_sample: pd.DataFrame, dask_address: str
) -> None:
    registry = store_with_model(macro_f1=0.0)  # any new model passes the gate against it
    latest = registry.latest_version()
    result = train(
        purchases_sample,
        store=registry.store,
        name=registry.name,
        source="tests",
        run_search=False,
        scheduler=dask_address,
        candidate=True,
    )
    assert not result.promoted
    assert registry.latest_version() == latest
    assert registry.candidate_version() == result.version
    assert registry.load("candidate").version == result.version
