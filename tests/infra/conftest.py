"""Infra test setup."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    # pulumi_aws emits DeprecationWarnings for its own legacy *V2 classes when its s3 module is
    # imported; they are not about this program's code (which uses the non-deprecated classes).
    config.addinivalue_line("filterwarnings", r"ignore::DeprecationWarning:pulumi_aws\..*")
