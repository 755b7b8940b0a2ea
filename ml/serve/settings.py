"""Serving settings, read from ``ML_*`` environment variables (as MLServer's ``Settings`` are).

The Deployment sets environment variables; ``python -m ml serve`` flags override them for a laptop
run. Every field below is one variable: its name is ``ML_`` plus the field name in upper case.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from ml.settings import DEFAULT_MODEL_NAME, DEFAULT_STORE


class ServeSettings(BaseSettings):
    """What the service serves, how it batches and how it reloads."""

    model_config = SettingsConfigDict(env_prefix="ML_", extra="ignore", frozen=True)

    #: ``ML_STORE``: the model store URL (a local directory or ``s3://bucket/prefix``).
    store: str = DEFAULT_STORE
    #: ``ML_MODEL_NAME``: which model of the store to serve (its ``LATEST`` version).
    model_name: str = DEFAULT_MODEL_NAME
    #: ``ML_HOST``: the address to bind; the container binds all interfaces, a laptop loopback.
    host: str = "127.0.0.1"
    #: ``ML_PORT``: the TCP port.
    port: int = Field(default=8080, ge=1, le=65535)
    #: ``ML_REVIEW_THRESHOLD``: predictions with a confidence below it are flagged for expert review.
    #: Unset: each model's own, chosen at training (metadata ``review_threshold``; 0.5 without one).
    review_threshold: float | None = Field(default=None, ge=0.0, le=1.0)
    #: ``ML_TOP_K``: how many alternative categories each prediction lists.
    top_k: int = Field(default=3, ge=1, le=20)
    #: ``ML_MAX_REQUEST_RECORDS``: records one request may carry; more is answered 413.
    max_request_records: int = Field(default=1000, ge=1)
    #: ``ML_MAX_BATCH_RECORDS``: records one model call may take when requests are grouped.
    max_batch_records: int = Field(default=256, ge=1)
    #: ``ML_MAX_BATCH_CHARS``: characters of text (description, contract, department) one model
    #: call may take. The model reads ~1 µs a character, so this bounds how long a request beside
    #: a big one waits for the call in progress (~4 ms) and for its own; a bigger request is
    #: answered over several calls (bench/serving_isolation.py measures both sides).
    max_batch_chars: int = Field(default=4096, ge=1)
    #: ``ML_BATCH_WINDOW_MS``: how long a batch may wait for more requests while others are still
    #: arriving. A lone request never waits: the window only applies while requests are in flight.
    #: 1 ms: a model call of a few records takes about that long (bench/serving.py: at concurrency 8
    #: a 5 ms window gave the same throughput with a higher p99).
    batch_window_ms: float = Field(default=1.0, ge=0.0, le=1000.0)
    #: ``ML_RELOAD_INTERVAL_S``: how often the registry's ``LATEST`` is polled for a new version.
    reload_interval_s: float = Field(default=10.0, gt=0.0)
    #: ``ML_MAX_BODY_BYTES``: the largest request body accepted (413 above it), a memory guard.
    max_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    #: ``ML_MAX_HEADER_BYTES``: the largest request line plus headers (431 above it; h11's
    #: ``max_incomplete_event_size``). 16 KiB is h11's default and far above what clients send.
    max_header_bytes: int = Field(default=16 * 1024, ge=1024)
    #: ``ML_HEADER_TIMEOUT_S``: how long a request's line and headers may take to arrive, from the
    #: connection opening or the previous answer (408 and closed after it).
    header_timeout_s: float = Field(default=10.0, gt=0.0)
    #: ``ML_BODY_TIMEOUT_S``: how long a request's body may take to arrive once its headers have
    #: (408 and closed after it): a client trickling a body cannot hold a connection for long.
    body_timeout_s: float = Field(default=30.0, gt=0.0)
    #: ``ML_CANDIDATE_MODE``: what the registry's ``CANDIDATE`` version does. ``off``: it is not
    #: loaded. ``shadow``: it also scores every record, answers come from ``LATEST``, and agreement,
    #: confidence and latency are exported per version. ``canary``: it answers the share
    #: ``ML_CANARY_SHARE`` of records, chosen by a stable hash of the record id.
    candidate_mode: Literal["off", "shadow", "canary"] = "off"
    #: ``ML_CANARY_SHARE``: the share of records (0-1) the candidate answers in canary mode.
    canary_share: float = Field(default=0.1, ge=0.0, le=1.0)
    #: ``ML_IMAGE_DIGEST``: the image digest the process runs from, shown in ``/v1/model``.
    image_digest: str | None = None
    #: ``ML_LOG_LEVEL``: uvicorn's log level.
    log_level: str = "info"
