"""docs/serving.md against the service: the metrics table lists exactly what ``/metrics`` exports,
and the settings table every ``ML_*`` setting."""

from __future__ import annotations

import re
from pathlib import Path

from ml.serve.metrics import PREFIX, ServeMetrics
from ml.serve.settings import ServeSettings

DOC = (Path(__file__).resolve().parents[2] / "docs" / "serving.md").read_text(encoding="utf-8")


def section(title: str) -> str:
    return DOC.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]


def test_the_metrics_table_lists_every_exported_metric() -> None:
    documented = set(re.findall(r"^\| `(\w+)` \|", section("Metrics"), re.M))
    suffix = {"counter": "_total", "info": "_info"}  # as exposed: the client strips them from family names
    exported = {
        metric.name.removeprefix(f"{PREFIX}_") + suffix.get(metric.type, "")
        for metric in ServeMetrics().registry.collect()
    }
    assert documented == exported, f"undocumented {exported - documented}, documented but gone {documented - exported}"


def test_the_settings_table_lists_every_setting() -> None:
    documented = set(re.findall(r"^\| `ML_(\w+)` \|", section("Settings"), re.M))
    shared = {"STORE", "MODEL_NAME", "IMAGE_DIGEST"}  # documented as the settings every command shares
    assert documented | shared == {name.upper() for name in ServeSettings.model_fields}
