"""``python -m ml serve``: run the REST service under uvicorn.

Every setting is an ``ML_*`` environment variable (see :class:`ml.serve.settings.ServeSettings`);
a flag given on the command line wins over the variable.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from pydantic import ValidationError

from ml.errors import BadInputError
from ml.serve.settings import ServeSettings

#: flag -> settings field; each flag documents its environment variable.
_FLAGS: dict[str, tuple[str, type, str]] = {
    "--store": ("store", str, "model store URL"),
    "--model": ("model_name", str, "model name in the store"),
    "--host": ("host", str, "address to bind"),
    "--port": ("port", int, "TCP port"),
    "--review-threshold": ("review_threshold", float, "confidence under which a record needs review"),
    "--top-k": ("top_k", int, "alternatives listed per prediction"),
    "--max-request-records": ("max_request_records", int, "records per request (more is 413)"),
    "--max-batch-records": ("max_batch_records", int, "records per model call"),
    "--batch-window-ms": ("batch_window_ms", float, "how long a batch may wait for concurrent requests"),
    "--reload-interval-s": ("reload_interval_s", float, "how often LATEST is polled"),
    "--max-body-bytes": ("max_body_bytes", int, "largest request body"),
    "--max-batch-chars": ("max_batch_chars", int, "characters of text per model call"),
    "--max-header-bytes": ("max_header_bytes", int, "largest request line and headers (431 above)"),
    "--header-timeout-s": ("header_timeout_s", float, "time a request's headers may take to arrive"),
    "--body-timeout-s": ("body_timeout_s", float, "time a request's body may take to arrive after its headers"),
    "--candidate-mode": ("candidate_mode", str, "what the CANDIDATE version does: off, shadow or canary"),
    "--canary-share": ("canary_share", float, "share of records the candidate answers in canary mode"),
    "--log-level": ("log_level", str, "uvicorn log level"),
}


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="serve LATEST (and a CANDIDATE in shadow or canary mode) over REST, with hot reload and metrics",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    defaults = ServeSettings.model_fields
    for flag, (field, kind, text) in _FLAGS.items():
        env = f"ML_{field.upper()}"
        parser.add_argument(
            flag,
            dest=field,
            type=kind,
            default=None,
            help=f"{text} (env {env}, default {defaults[field].default!r})",
        )
    parser.set_defaults(func=run)


def settings_from_args(args: argparse.Namespace) -> ServeSettings:
    """Environment first, flags over it; an invalid value is bad input with the field named."""
    overrides = {
        field: getattr(args, field) for field, _, _ in _FLAGS.values() if getattr(args, field, None) is not None
    }
    try:
        return ServeSettings(**overrides)
    except ValidationError as exc:
        raise BadInputError(f"invalid serving settings: {exc}") from exc


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from ml.serve.app import create_app
    from ml.serve.protocol import guarded_protocol

    settings = settings_from_args(args)
    # The model thread runs Python (the features' n-grams) for the whole of a call; at the default
    # 5 ms switch interval each step of a request on the event loop could wait that long for the
    # GIL behind it. 1 ms lets small requests through beside big ones (bench/serving_isolation.py).
    sys.setswitchinterval(0.001)
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        http=guarded_protocol(settings.max_header_bytes, settings.header_timeout_s),
        h11_max_incomplete_event_size=settings.max_header_bytes,
        log_level=settings.log_level,
        access_log=False,  # Prometheus counts requests; a log line each would cost more than the model
        timeout_graceful_shutdown=10,
    )
    return 0
