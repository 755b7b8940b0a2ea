"""Model artifacts: bytes that cannot run code when they are loaded.

A joblib file is a pickle, and unpickling runs whatever the file tells it to: whoever can write the
bucket could make every reader run code, and the sha256 stored beside the artifact does not help
(that writer can write both). New versions are therefore stored with skops (``skops.io``), whose
loader rebuilds objects from a description and refuses any type it was not told to trust. The types
this project trusts are :data:`TRUSTED_TYPES`, the one list; every load checks the artifact against
it before anything is constructed and names what it refuses.

Versions stored as joblib before the format existed load only where an operator opted in
(``ML_ALLOW_PICKLE_MODELS=1``, :func:`ml.settings.allow_pickle_models`); ``python -m ml models
convert VERSION`` rewrites one as skops.
"""

from __future__ import annotations

import io
import json
import zipfile
from typing import Any

import joblib
import skops.io as sio
from skops.io.exceptions import UntrustedTypesFoundException

from ml.errors import BadInputError, MlError
from ml.settings import ALLOW_PICKLE_ENV

SKOPS = "skops"
JOBLIB = "joblib"
#: Artifact file name of each format; ``metadata.json``'s ``format`` says which one a version uses.
FILE_NAMES = {SKOPS: "model.skops", JOBLIB: "model.joblib"}
#: The format of metadata written before it was recorded: ``ml train`` stored joblib only.
LEGACY_FORMAT = JOBLIB

#: Every type a stored pipeline may contain, by the name skops records: exactly what
#: :func:`ml.model.fit_model`'s pipeline holds (tests/ml/test_registry.py keeps the two equal when a
#: library or the pipeline changes), plus ``ml.features.price_keys`` and sklearn's
#: ``TfidfVectorizer``, which models registered with the price block or before the vectorizers were
#: :class:`ml.features.CompactTfidfVectorizer` refer to, so they can be converted. skops trusts
#: some of these by default; listing them all here means a default it adds later is still refused
#: unless it is listed.
TRUSTED_TYPES: frozenset[str] = frozenset(
    {
        "builtins.dict",
        "builtins.list",
        "builtins.slice",
        "builtins.str",
        "builtins.tuple",
        "ml.calibration.TemperatureScaledSVC",
        "ml.features.CompactTfidfVectorizer",
        "ml.features.SequentialColumnTransformer",
        "ml.features.first_word",
        "ml.features.last_word",
        "ml.features.log_cost",
        "ml.features.normalise_column",
        "ml.features.price_keys",
        "numpy.float32",
        "numpy.float64",
        "numpy.ndarray",
        "sklearn.feature_extraction.text.TfidfTransformer",
        "sklearn.feature_extraction.text.TfidfVectorizer",
        "sklearn.pipeline.FeatureUnion",
        "sklearn.pipeline.Pipeline",
        "sklearn.preprocessing._data.StandardScaler",
        "sklearn.preprocessing._encoders.OneHotEncoder",
        "sklearn.preprocessing._function_transformer.FunctionTransformer",
    }
)


class UntrustedArtifactError(BadInputError):
    """An artifact that would need a type (or a loader) this project does not trust."""


def dumps(pipeline: Any) -> bytes:
    """The skops bytes of ``pipeline`` (a deflated zip: arrays as ``.npy``, the rest as JSON)."""
    return sio.dumps(pipeline, compression=zipfile.ZIP_DEFLATED)


def types_in(data: bytes) -> set[str]:
    """Every type a skops artifact names (``module.name``), read from its schema without importing any.

    skops' own audit compares against its defaults plus the list it is given; this reads the whole
    set, so :func:`loads` can hold the artifact to :data:`TRUSTED_TYPES` alone.
    """
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            schema = json.loads(archive.read("schema.json"))
    except (zipfile.BadZipFile, KeyError, ValueError) as exc:
        raise BadInputError(f"not a skops artifact ({type(exc).__name__}: {exc})") from None
    found: set[str] = set()
    pending: list[Any] = [schema]
    while pending:
        node = pending.pop()
        if isinstance(node, dict):
            module, name = node.get("__module__"), node.get("__class__")
            if isinstance(module, str) and isinstance(name, str):
                found.add(f"{module}.{name}")
            pending.extend(node.values())
        elif isinstance(node, list):
            pending.extend(node)
    return found


def loads(data: bytes, fmt: str, *, allow_pickle: bool, label: str) -> Any:
    """The object stored in ``data`` in format ``fmt``; ``label`` names it in errors.

    skops: refused before anything is built if it names a type outside :data:`TRUSTED_TYPES`, then
    loaded by skops with that list (its audit is the second check). joblib: only with
    ``allow_pickle``, the operator's explicit opt-in.
    """
    if fmt == SKOPS:
        untrusted = sorted(types_in(data) - TRUSTED_TYPES)
        if untrusted:
            raise UntrustedArtifactError(
                f"{label}: artifact names types this project does not trust: {', '.join(untrusted)}; "
                "refused without loading it"
            )
        try:
            return sio.loads(data, trusted=sorted(TRUSTED_TYPES))
        except UntrustedTypesFoundException as exc:
            raise UntrustedArtifactError(f"{label}: refused without loading it: {exc}") from None
        except Exception as exc:
            raise BadInputError(f"{label}: the skops artifact cannot be loaded: {type(exc).__name__}: {exc}") from exc
    if fmt == JOBLIB:
        if not allow_pickle:
            raise UntrustedArtifactError(
                f"{label} is stored as a joblib pickle, which runs code when it is loaded: refused. "
                f"Rewrite it in the safe format with `python -m ml models convert VERSION` "
                f"(if you trust how it was written), or set {ALLOW_PICKLE_ENV}=1 to load pickles as they are"
            )
        try:
            return joblib.load(io.BytesIO(data))
        except MlError:
            raise
        except Exception as exc:
            raise BadInputError(f"{label}: the joblib artifact cannot be loaded: {type(exc).__name__}: {exc}") from exc
    raise BadInputError(f"{label}: unknown artifact format {fmt!r} (known: {', '.join(FILE_NAMES)})")
