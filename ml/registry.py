"""Versioned model store on any fsspec URL (a local directory or ``s3://bucket/prefix``).

Layout::

    <store>/models/<name>/<version>/model.joblib     the pickled scikit-learn pipeline
    <store>/models/<name>/<version>/metadata.json    written after the artifact: metrics, sha256, ...
    <store>/models/<name>/LATEST                     the served version; written last, atomically
    <store>/models/<name>/CANDIDATE                  optional: a version to try on live traffic

A version directory without ``metadata.json`` is an interrupted write and is invisible. ``LATEST``
moves only through :meth:`ModelRegistry.promote`, after the quality gate, so readers never see a
model that is incomplete or worse than the one they had. ``CANDIDATE`` follows the same rules
(:meth:`ModelRegistry.propose`: complete, gated, written atomically); the service tries it in shadow
or canary mode, then :meth:`~ModelRegistry.promote_candidate` moves ``LATEST`` to it or
:meth:`~ModelRegistry.reject_candidate` removes the pointer.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import fsspec
import joblib
import pandas as pd
from fsspec.implementations.local import LocalFileSystem

from ml.errors import BadInputError, InfrastructureError, IntegrityError, NotFoundError
from ml.settings import DEFAULT_MODEL_NAME

#: One plausible record every loaded model must be able to score.
_PROBE = pd.DataFrame({"description": ["PROBE RECORD"], "cost": [1.0], "contract": [""], "department": [""]})
ARTIFACT = "model.joblib"
METADATA = "metadata.json"
LATEST = "LATEST"
CANDIDATE = "CANDIDATE"
POINTERS = (LATEST, CANDIDATE)
#: How ``ml train`` estimates quality (``metrics["estimate"]``): a fit on the rows outside the 20 %
#: hash split of descriptions, scored on the split. Models registered before the label existed were
#: scored exactly this way (by the model itself, which was then fitted on those rows only), so
#: metadata without it reads as this.
HASH_SPLIT_ESTIMATE = "hash-split-20pct"


@dataclass(frozen=True)
class LoadedModel:
    """A verified pipeline with the metadata it was stored with."""

    version: str
    pipeline: Any
    metadata: dict[str, Any]


@dataclass(frozen=True)
class GateDecision:
    promoted: bool
    reason: str


def new_version() -> str:
    """Sortable, unique version ids: UTC time then random bits (two trainings never collide)."""
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ") + "-" + secrets.token_hex(3)


def storage_options_from_env() -> dict[str, Any]:
    """S3-compatible endpoints (MinIO, a test server) come from ``AWS_ENDPOINT_URL`` like boto3's."""
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    return {"client_kwargs": {"endpoint_url": endpoint}} if endpoint else {}


def open_store(url: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """Filesystem and root path for a store URL (plain paths are local directories)."""
    options = storage_options_from_env() if url.startswith("s3://") else {}
    fs, root = fsspec.core.url_to_fs(url, **options)
    return fs, root.rstrip("/")


def write_atomically(fs: fsspec.AbstractFileSystem, path: str, data: bytes) -> None:
    """Replace ``path`` so readers see the old or the new bytes, never a partial file.

    An object store's PUT is already atomic; a local file is written aside and renamed over.
    """
    if isinstance(fs, LocalFileSystem):
        tmp = f"{path}.tmp-{uuid.uuid4().hex}"
        fs.makedirs(fs._parent(path), exist_ok=True)
        fs.pipe_file(tmp, data)
        os.replace(tmp, path)
    else:
        fs.pipe_file(path, data)


class ModelRegistry:
    """Save, gate, promote and load model versions of one model name."""

    def __init__(self, store: str, name: str = DEFAULT_MODEL_NAME) -> None:
        self.store = store
        self.name = name
        self.fs, root = open_store(store)
        self.root = f"{root}/models/{name}"

    def _path(self, *parts: str) -> str:
        return "/".join([self.root, *parts])

    def _read(self, path: str) -> bytes:
        try:
            return bytes(self.fs.cat_file(path))
        except FileNotFoundError:
            raise
        except Exception as exc:  # network, credentials, permissions: the store is unusable
            raise InfrastructureError(f"cannot read {path} from store {self.store}: {exc}") from exc

    # -- writing ---------------------------------------------------------------------------------

    def save(self, pipeline: Any, metadata: dict[str, Any], version: str | None = None) -> str:
        """Store a new version (artifact first, metadata last) without touching ``LATEST``."""
        version = version or new_version()
        buffer = io.BytesIO()
        joblib.dump(pipeline, buffer, compress=3)
        artifact = buffer.getvalue()
        full = {
            **metadata,
            "name": self.name,
            "version": version,
            "artifact": ARTIFACT,
            "sha256": hashlib.sha256(artifact).hexdigest(),
            "size_bytes": len(artifact),
            "created_at": datetime.now(UTC).isoformat(),
        }
        try:
            self.fs.makedirs(self._path(version), exist_ok=True)
            self.fs.pipe_file(self._path(version, ARTIFACT), artifact)
            write_atomically(self.fs, self._path(version, METADATA), json.dumps(full, indent=2).encode())
        except Exception as exc:
            raise InfrastructureError(f"cannot write model {version} to {self.store}: {exc}") from exc
        return version

    def gate(self, candidate_metrics: dict[str, Any], tolerance: float) -> GateDecision:
        """The quality gate: macro-F1 may not drop more than ``tolerance`` below LATEST's.

        Only estimates made the same way are compared: against a LATEST estimated differently the
        gate refuses rather than compare unlike numbers.
        """
        current = self.latest_version()
        if current is None:
            return GateDecision(True, "no LATEST yet")
        current_metrics = self.metadata(current)["metrics"]
        current_method = current_metrics.get("estimate", HASH_SPLIT_ESTIMATE)
        new_method = candidate_metrics.get("estimate", HASH_SPLIT_ESTIMATE)
        if new_method != current_method:
            return GateDecision(
                False, f"quality estimated by {new_method}, LATEST {current} by {current_method}: not comparable"
            )
        current_f1 = float(current_metrics["macro_f1"])
        new_f1 = float(candidate_metrics["macro_f1"])
        verdict = f"macro-F1 {new_f1:.4f} vs LATEST {current} {current_f1:.4f} (tolerance {tolerance})"
        return GateDecision(new_f1 >= current_f1 - tolerance, verdict)

    def promote(self, version: str) -> None:
        """Point ``LATEST`` at a complete version (the last write of a training)."""
        self._point(LATEST, version)

    def propose(self, version: str) -> None:
        """Point ``CANDIDATE`` at a complete version that is not ``LATEST`` (callers gate it first)."""
        if version == self.latest_version():
            raise BadInputError(f"version {version} is already LATEST of '{self.name}'; a candidate must differ")
        self._point(CANDIDATE, version)

    def promote_candidate(self) -> str:
        """Move ``LATEST`` to the candidate, then remove ``CANDIDATE``; returns the promoted version.

        Between the two writes both pointers name the same version, which readers treat as no
        candidate: every reader sees the old pair, that in-between state, or the new pair.
        """
        version = self._require_candidate()
        self.promote(version)
        self._remove(CANDIDATE)
        return version

    def reject_candidate(self) -> str:
        """Remove the ``CANDIDATE`` pointer (the version itself stays stored); returns its version."""
        version = self._require_candidate()
        self._remove(CANDIDATE)
        return version

    def _require_candidate(self) -> str:
        version = self.candidate_version()
        if version is None:
            raise NotFoundError(f"model '{self.name}' has no CANDIDATE in {self.store}")
        return version

    def _point(self, pointer: str, version: str) -> None:
        self.metadata(version)  # refuses unknown or incomplete versions
        try:
            write_atomically(self.fs, self._path(pointer), version.encode())
        except Exception as exc:
            raise InfrastructureError(f"cannot write {pointer} in {self.store}: {exc}") from exc

    def _remove(self, pointer: str) -> None:
        try:
            self.fs.rm_file(self._path(pointer))
        except FileNotFoundError:
            pass
        except Exception as exc:
            raise InfrastructureError(f"cannot remove {pointer} in {self.store}: {exc}") from exc

    # -- reading ---------------------------------------------------------------------------------

    def latest_version(self) -> str | None:
        return self._pointer(LATEST)

    def candidate_version(self) -> str | None:
        """The version ``CANDIDATE`` names, or None (no pointer, or it names ``LATEST`` mid-promotion)."""
        return self.pointed_versions()[1]

    def pointed_versions(self) -> tuple[str | None, str | None]:
        """``LATEST`` and :meth:`candidate_version`, each pointer read once (what a poll needs)."""
        latest, candidate = self._pointer(LATEST), self._pointer(CANDIDATE)
        return latest, None if candidate == latest else candidate

    def _pointer(self, pointer: str) -> str | None:
        try:
            return self._read(self._path(pointer)).decode().strip() or None
        except FileNotFoundError:
            return None

    def resolve(self, version: str = "latest") -> str:
        """A version id from an id, ``latest`` or ``candidate``."""
        if version.lower() == "candidate":
            candidate = self.candidate_version()
            if candidate is None:
                raise NotFoundError(f"model '{self.name}' has no CANDIDATE in {self.store}")
            return candidate
        if version.lower() != "latest":
            return version
        latest = self.latest_version()
        if latest is None:
            raise NotFoundError(f"no LATEST model '{self.name}' in {self.store}: train one first")
        return latest

    def metadata(self, version: str = "latest") -> dict[str, Any]:
        version = self.resolve(version)
        try:
            raw = self._read(self._path(version, METADATA))
        except FileNotFoundError as exc:
            raise NotFoundError(f"model '{self.name}' has no complete version {version!r} in {self.store}") from exc
        try:
            data: dict[str, Any] = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise IntegrityError(f"metadata of {self.name}/{version} is not valid JSON: {exc}") from exc
        return data

    def versions(self) -> list[dict[str, Any]]:
        """Metadata of every complete version, oldest first."""
        try:
            entries = self.fs.ls(self.root, detail=False) if self.fs.exists(self.root) else []
        except Exception as exc:
            raise InfrastructureError(f"cannot list {self.root}: {exc}") from exc
        found = []
        for entry in sorted(entries):
            version = entry.rstrip("/").rsplit("/", 1)[-1]
            if version in POINTERS or not self.fs.exists(self._path(version, METADATA)):
                continue
            found.append(self.metadata(version))
        return found

    def load(self, version: str = "latest") -> LoadedModel:
        """Load a version after checking its size and sha256 against its metadata."""
        version = self.resolve(version)
        metadata = self.metadata(version)
        try:
            artifact = self._read(self._path(version, metadata.get("artifact", ARTIFACT)))
        except FileNotFoundError as exc:
            raise IntegrityError(f"model {self.name}/{version}: artifact is missing") from exc
        digest = hashlib.sha256(artifact).hexdigest()
        if len(artifact) != metadata.get("size_bytes") or digest != metadata.get("sha256"):
            raise IntegrityError(
                f"model {self.name}/{version}: artifact is corrupt or truncated "
                f"({len(artifact)} bytes, sha256 {digest[:12]}…; metadata says "
                f"{metadata.get('size_bytes')} bytes, sha256 {str(metadata.get('sha256'))[:12]}…)"
            )
        from ml.model import predict  # scikit-learn: only loading needs it, not listing or inspecting

        try:
            pipeline = joblib.load(io.BytesIO(artifact))
            # Verified bytes can still be a model this code can't run (pickled by an older version):
            # find out here, not in a worker half-way through a batch.
            predict(pipeline, _PROBE)
        except Exception as exc:
            raise BadInputError(
                f"model {self.name}/{version} cannot be used by this code "
                f"(trained with code {metadata.get('code_version')}): {type(exc).__name__}: {exc}"
            ) from exc
        return LoadedModel(version=version, pipeline=pipeline, metadata=metadata)
