"""The model report: one self-contained HTML page with its five charts, from what training stored."""

from __future__ import annotations

import base64
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest

from ml.cli import main
from ml.jobs.train import train
from ml.registry import ModelRegistry
from ml.report import CHARTS, REPORT_FILE

PNG = b"\x89PNG\r\n\x1a\n"


class Images(HTMLParser):
    """Every ``<img>``'s ``data-chart`` and decoded bytes; fails on an image that is not embedded."""

    def __init__(self) -> None:
        super().__init__()
        self.charts: dict[str, bytes] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "img":
            found = dict(attrs)
            prefix = "data:image/png;base64,"
            assert (found.get("src") or "").startswith(prefix), "image not embedded as a base64 PNG"
            self.charts[str(found["data-chart"])] = base64.b64decode(str(found["src"])[len(prefix) :])


def charts(path: Path) -> dict[str, bytes]:
    parser = Images()
    parser.feed(path.read_text())
    return parser.charts


@pytest.mark.slow
def test_train_stores_what_the_report_draws_and_the_page_has_five_charts(
    purchases_sample: pd.DataFrame, tmp_path: Path, dask_address: str, capsys: pytest.CaptureFixture[str]
) -> None:
    store = str(tmp_path / "store")
    result = train(
        purchases_sample,
        store=store,
        name="m",
        source="sample",
        run_search=False,
        scheduler=dask_address,
        target_accuracy=0.9,
        html_report=True,
    )
    meta = ModelRegistry(store, "m").metadata(result.version)
    chosen = meta["decisions"]["threshold"]
    assert meta["target_accuracy"] == 0.9 and meta["review_threshold"] == chosen["threshold"] == result.review_threshold
    assert chosen["accuracy"] >= 0.9 and 0 < chosen["coverage"] < 1
    at = meta["decisions"]["at_threshold"]
    assert at["auto_share"] + at["review_share"] == pytest.approx(1.0)
    assert meta["decisions"]["curve"][-1]["coverage"] == 1.0 and meta["decisions"]["reliability"]
    folds = pd.DataFrame(meta["novelty"]["folds"])
    assert set(folds["recipe"]) == {"model", "baseline"} and (folds["rows"] <= folds["fold_rows"]).all()

    beside = Path(store) / "models" / "m" / result.version / REPORT_FILE
    assert set(charts(beside)) == {key for key, _ in CHARTS}

    out = tmp_path / "reports"
    assert main(["models", "report", result.version, "--store", store, "--model-name", "m", "--out", str(out)]) == 0
    page = out / f"m-{result.version}.html"
    assert capsys.readouterr().out.strip().endswith(page.name)
    images = charts(page)
    assert list(images) == [key for key, _ in CHARTS]  # all five, in order
    for key, png in images.items():
        assert png.startswith(PNG) and len(png) > 5_000, key  # a drawn chart, not an empty canvas
    assert f"{chosen['threshold']}" in page.read_text()


def test_a_model_stored_before_thresholds_still_gets_a_page(store_with_model, tmp_path: Path) -> None:
    registry = store_with_model()
    assert main(["models", "report", "--store", registry.store, "--out", str(tmp_path)]) == 0
    (page,) = tmp_path.glob("*.html")
    images = charts(page)
    assert len(images) == 5 and all(png.startswith(PNG) for png in images.values())
    assert "not chosen" in page.read_text()
