"""The service's OpenAPI schema as committed in ``docs/openapi.json``.

    python -m ml.serve.openapi > docs/openapi.json

Generated from the app itself (no model or server needed), so the committed schema is the one a
running service publishes at ``/openapi.json``; ``tests/test_docs.py`` keeps the two equal.
"""

from __future__ import annotations

import json

from ml.serve.app import create_app
from ml.serve.settings import ServeSettings


def openapi_json() -> str:
    """The schema with default settings, as stable, indented JSON ending in a newline."""
    return json.dumps(create_app(ServeSettings()).openapi(), indent=2, ensure_ascii=False) + "\n"


if __name__ == "__main__":  # pragma: no cover
    print(openapi_json(), end="")
