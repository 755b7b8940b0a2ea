"""Where things live by default: embedded locally, overridden by environment variables in a cluster.

The CronJobs and Deployments set these variables; on a laptop nothing needs to be set. A setting that
carries credentials can also be given as a file: ``DATABASE_URL_FILE`` names a file holding the URL
(how the cluster passes it, from a Secret mounted as a file).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from ml.cli_types import positive_float
from ml.errors import BadInputError

STORE_ENV = "ML_STORE"
DATABASE_ENV = "DATABASE_URL"
MODEL_NAME_ENV = "ML_MODEL_NAME"
IMAGE_DIGEST_ENV = "ML_IMAGE_DIGEST"
SOURCE_REVISION_ENV = "ML_SOURCE_REVISION"
ALLOW_PICKLE_ENV = "ML_ALLOW_PICKLE_MODELS"
SCHEDULER_ENV = "DASK_SCHEDULER_ADDRESS"

DEFAULT_STORE = "var/store"
DEFAULT_DATABASE_URL = "sqlite:///var/purchases.db"
DEFAULT_MODEL_NAME = "purchase-classifier"


def env_setting(name: str) -> str | None:
    """The value of the variable ``name``, or the contents of the file its ``<name>_FILE`` names.

    Both set is refused rather than ranked: a stale variable silently winning over the mounted Secret
    (or the reverse) is the kind of surprise that points a job at the wrong database. One trailing
    newline, which editors and ``kubectl create secret --from-file`` leave, is not part of the value.
    """
    file_name = f"{name}_FILE"
    value = os.environ.get(name) or None
    path = os.environ.get(file_name) or None
    if path is None:
        return value
    if value is not None:
        raise BadInputError(f"both {name} and {file_name} are set; set only one of them")
    try:
        text = Path(path).read_text(encoding="utf-8").removesuffix("\n").removesuffix("\r")
    except OSError as exc:
        raise BadInputError(f"{file_name}={path}: cannot read the file ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise BadInputError(f"{file_name}={path}: the file is not UTF-8 text") from None
    if not text:
        raise BadInputError(f"{file_name}={path}: the file is empty")
    return text


def default_store() -> str:
    return os.environ.get(STORE_ENV) or DEFAULT_STORE


def default_database_url() -> str:
    return env_setting(DATABASE_ENV) or DEFAULT_DATABASE_URL


def default_model_name() -> str:
    return os.environ.get(MODEL_NAME_ENV) or DEFAULT_MODEL_NAME


def image_digest() -> str | None:
    """The image digest the process runs from, when the platform told us (recorded in outputs)."""
    return os.environ.get(IMAGE_DIGEST_ENV) or None


def source_revision() -> str | None:
    """The source revision (a git commit) the running code was built from, when set (model provenance)."""
    return os.environ.get(SOURCE_REVISION_ENV) or None


def allow_pickle_models() -> bool:
    """Whether model versions stored as joblib pickles may be loaded (``ML_ALLOW_PICKLE_MODELS=1``).

    Unpickling runs code the file names, so it is an operator's explicit choice, off by default; a
    value other than 0 or 1 is refused rather than guessed.
    """
    value = os.environ.get(ALLOW_PICKLE_ENV, "").strip()
    if value not in {"", "0", "1"}:
        raise BadInputError(f"{ALLOW_PICKLE_ENV} must be 0 or 1, got {value!r}")
    return value == "1"


def add_store_argument(parser: argparse.ArgumentParser) -> None:
    """``--store``, the same flag with the same default for every command that reads the store."""
    parser.add_argument(
        "--store", default=default_store(), help=f"store URL: a directory or s3://bucket/prefix (env {STORE_ENV})"
    )


def add_database_argument(parser: argparse.ArgumentParser) -> None:
    """``--database-url``, the same flag with the same default for every command that uses the database."""
    parser.add_argument(
        "--database-url",
        default=default_database_url(),
        help=f"SQLAlchemy URL (env {DATABASE_ENV} or {DATABASE_ENV}_FILE, a file; default {DEFAULT_DATABASE_URL})",
    )


def add_model_name_argument(parser: argparse.ArgumentParser) -> None:
    """``--model-name``, the same flag for every command that picks a model in the store."""
    parser.add_argument(
        "--model-name", default=default_model_name(), help=f"model name in the store (env {MODEL_NAME_ENV})"
    )


def add_dask_arguments(parser: argparse.ArgumentParser, timeout: float = 30.0) -> None:
    """``--scheduler`` and ``--dask-timeout``, the same for every command that runs on Dask."""
    parser.add_argument(
        "--scheduler", default=None, help=f"Dask scheduler address (env {SCHEDULER_ENV}; default: a local cluster)"
    )
    parser.add_argument(
        "--dask-timeout",
        type=positive_float,
        default=timeout,
        help=f"seconds to reach the scheduler and its workers before failing (default {timeout:.0f})",
    )
