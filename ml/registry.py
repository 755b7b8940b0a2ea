"""Versioned model store on any fsspec URL (a local directory or ``s3://bucket/prefix``).

Layout::

    <store>/models/<name>/<version>/model.skops      the scikit-learn pipeline (skops; see ml.artifacts)
    <store>/models/<name>/<version>/metadata.json    written after the artifact: format, sha256, ...
    <store>/models/<name>/LATEST                     the served version; written last, atomically
    <store>/models/<name>/CANDIDATE                  optional: a version to try on live traffic

A version directory without ``metadata.json`` is an interrupted write and is invisible. ``LATEST``
moves only through :meth:`ModelRegistry.promote`, after the quality gate, so readers never see a
model that is incomplete or worse than the one they had. ``CANDIDATE`` follows the same rules
(:meth:`ModelRegistry.propose`: complete, gated, written atomically); the service tries it in shadow
or canary mode, then :meth:`~ModelRegistry.promote_candidate` moves ``LATEST`` to it or
:meth:`~ModelRegistry.reject_candidate` removes the pointer. A pointer moves only to a version that
:meth:`~ModelRegistry.verify` accepts.

Everything in the store is input: every path the registry reads or writes is built by
:meth:`ModelRegistry._path` from names that :func:`check_name` accepts (the model name, version ids,
pointer contents, metadata's ``artifact``) and must resolve inside the model's directory, so no
planted name or symlink reaches a file outside it.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import re
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import fsspec
import pandas as pd
from fsspec.implementations.local import LocalFileSystem

from ml import artifacts
from ml.errors import BadInputError, InfrastructureError, IntegrityError, MlError, NotFoundError
from ml.settings import DEFAULT_MODEL_NAME, allow_pickle_models, image_digest, source_revision

#: One plausible record every loaded model must be able to score.
_PROBE = pd.DataFrame({"description": ["PROBE RECORD"], "cost": [1.0], "contract": [""], "department": [""]})
#: The artifact file of new versions.
ARTIFACT = artifacts.FILE_NAMES[artifacts.SKOPS]
METADATA = "metadata.json"
LATEST = "LATEST"
CANDIDATE = "CANDIDATE"
POINTERS = (LATEST, CANDIDATE)
#: How ``ml train`` estimates quality (``metrics["estimate"]``): a fit on the rows outside the 20 %
#: hash split of descriptions, scored on the split. Models registered before the label existed were
#: scored exactly this way (by the model itself, which was then fitted on those rows only), so
#: metadata without it reads as this.
HASH_SPLIT_ESTIMATE = "hash-split-20pct"
#: Model names, version ids, pointer contents and artifact file names: one path segment of plain
#: characters, starting with a letter or digit (so never ``.``, ``..``, empty or hidden).
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_SHA256 = re.compile(r"[0-9a-f]{64}")


def check_name(value: object, what: str) -> str:
    """``value`` if it is a safe store name, else a :class:`BadInputError` saying ``what`` it was."""
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise BadInputError(
            f"{what} is {value!r}, not a valid name (letters, digits, '.', '_', '-'; at most 128; "
            "starting with a letter or digit): refused"
        )
    return value


@dataclass(frozen=True)
class LoadedModel:
    """A verified pipeline with the metadata it was stored with."""

    version: str
    pipeline: Any
    metadata: dict[str, Any]


@dataclass(frozen=True)
class VersionEntry:
    """One version directory as ``ml models list`` shows it: its metadata, or why it cannot be read."""

    version: str
    metadata: dict[str, Any] | None
    error: str | None = None


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
        self.name = check_name(name, "the model name")
        self.fs, root = open_store(store)
        self.root = f"{root}/models/{name}"

    def _path(self, *parts: str) -> str:
        """The store path of ``parts`` under the model's directory: the one way every path is built.

        Each part must be a safe name, and the path must stay inside the model's directory once
        resolved: lexically on an object store, through symlinks on a local disk.
        """
        for part in parts:
            check_name(part, f"a path part in model '{self.name}'")
        path = "/".join([self.root, *parts])
        if isinstance(self.fs, LocalFileSystem):
            inside = os.path.realpath(path).startswith(os.path.realpath(self.root) + os.sep)
        else:
            inside = posixpath.normpath(path) == path
        if not inside:
            raise BadInputError(f"{'/'.join(parts)} in model '{self.name}' resolves outside its directory: refused")
        return path

    def _read(self, path: str) -> bytes:
        try:
            return bytes(self.fs.cat_file(path))
        except FileNotFoundError:
            raise
        except Exception as exc:  # network, credentials, permissions: the store is unusable
            raise InfrastructureError(f"cannot read {path} from store {self.store}: {exc}") from exc

    # -- writing ---------------------------------------------------------------------------------

    def save(self, pipeline: Any, metadata: dict[str, Any], version: str | None = None) -> str:
        """Store a new version (artifact first, metadata last) without touching ``LATEST``.

        Provenance: the image digest and source revision of the process that saves it (the job that
        trained it) are recorded unless ``metadata`` already names them.
        """
        version = check_name(version or new_version(), "the new version")
        artifact = artifacts.dumps(pipeline)
        full = {
            "image_digest": image_digest(),
            "source_revision": source_revision(),
            **metadata,
            **_artifact_fields(artifacts.SKOPS, artifact),
            "name": self.name,
            "version": version,
            "created_at": datetime.now(UTC).isoformat(),
        }
        try:
            self.fs.makedirs(self._path(version), exist_ok=True)
            self.fs.pipe_file(self._path(version, ARTIFACT), artifact)
            write_atomically(self.fs, self._path(version, METADATA), json.dumps(full, indent=2).encode())
        except Exception as exc:
            raise InfrastructureError(f"cannot write model {version} to {self.store}: {exc}") from exc
        return version

    def convert(self, version: str) -> dict[str, Any] | None:
        """Rewrite a joblib version as skops in place; its new metadata, or None if it already was.

        This unpickles the version: running it is the operator's statement that they trust it. The
        skops artifact must load with the trusted types and predict what the pickle predicts before
        the metadata (written last, atomically) switches to it; the pickle stays beside it,
        unreferenced, so a reader that read the old metadata still finds its artifact. Pointers keep
        naming the version.
        """
        version = self.resolve(version)
        metadata = self.metadata(version)
        fmt, old_artifact = _format_and_artifact(metadata)
        if fmt == artifacts.SKOPS:
            return None
        if old_artifact == ARTIFACT:
            raise BadInputError(f"model {self.name}/{version}: its {fmt} artifact is named {ARTIFACT}; not converted")
        pipeline = self._build(version, metadata, self._read_artifact(version, metadata), allow_pickle=True)
        data = artifacts.dumps(pipeline)
        converted = self._build(version, {"format": artifacts.SKOPS}, data, allow_pickle=False)
        from ml.model import predict

        before, after = predict(pipeline, _PROBE), predict(converted, _PROBE)
        if list(before.category) != list(after.category) or not (before.confidence == after.confidence).all():
            raise IntegrityError(f"model {self.name}/{version}: the skops copy predicts differently; not converted")
        new = {
            **metadata,
            **_artifact_fields(artifacts.SKOPS, data),
            "converted": {
                "from_format": fmt,
                "from_artifact": old_artifact,
                "from_sha256": metadata.get("sha256"),
                "at": datetime.now(UTC).isoformat(),
                "image_digest": image_digest(),
                "source_revision": source_revision(),
            },
        }
        try:
            self.fs.pipe_file(self._path(version, ARTIFACT), data)
            write_atomically(self.fs, self._path(version, METADATA), json.dumps(new, indent=2).encode())
        except Exception as exc:
            raise InfrastructureError(f"cannot write model {version} to {self.store}: {exc}") from exc
        return new

    def gate(self, candidate_metrics: dict[str, Any], tolerance: float) -> GateDecision:
        """The quality gate: macro-F1 may not drop more than ``tolerance`` below LATEST's.

        Only estimates made the same way are compared: against a LATEST estimated differently the
        gate refuses rather than compare unlike numbers.
        """
        current = self.latest_version()
        if current is None:
            return GateDecision(True, "no LATEST yet")
        current_metrics = self.metadata(current).get("metrics")
        if not isinstance(current_metrics, dict):
            raise IntegrityError(f"metadata of LATEST {current} has no metrics to gate against")
        current_method = current_metrics.get("estimate", HASH_SPLIT_ESTIMATE)
        new_method = candidate_metrics.get("estimate", HASH_SPLIT_ESTIMATE)
        if new_method != current_method:
            return GateDecision(
                False, f"quality estimated by {new_method}, LATEST {current} by {current_method}: not comparable"
            )
        current_f1 = _macro_f1(current_metrics, f"LATEST {current}")
        new_f1 = _macro_f1(candidate_metrics, "the new version")
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
        self.verify(version)  # refuses unknown, incomplete, corrupt, unsafe or unusable versions
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
            raw = self._read(self._path(pointer))
        except FileNotFoundError:
            return None
        text = raw.decode("utf-8", errors="replace").strip()
        return check_name(text, f"{pointer} of model '{self.name}'") if text else None

    def resolve(self, version: str = "latest") -> str:
        """A version id from an id, ``latest`` or ``candidate``."""
        if version.lower() == "candidate":
            candidate = self.candidate_version()
            if candidate is None:
                raise NotFoundError(f"model '{self.name}' has no CANDIDATE in {self.store}")
            return candidate
        if version.lower() != "latest":
            return check_name(version, "the version")
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
            data = json.loads(raw)
        except ValueError as exc:  # not JSON, or not even UTF-8
            raise IntegrityError(f"metadata of {self.name}/{version} is not valid JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise IntegrityError(f"metadata of {self.name}/{version} is not a JSON object")
        _format_and_artifact(data, f"metadata of {self.name}/{version}")
        return data

    def listing(self) -> list[VersionEntry]:
        """Every complete version, oldest first; one whose metadata cannot be read carries the reason."""
        try:
            entries = self.fs.ls(self.root, detail=False) if self.fs.exists(self.root) else []
        except Exception as exc:
            raise InfrastructureError(f"cannot list {self.root}: {exc}") from exc
        found = []
        for entry in sorted(entries):
            version = entry.rstrip("/").rsplit("/", 1)[-1]
            if version in POINTERS or not _NAME.fullmatch(version):  # temp files, strays: never versions
                continue
            try:
                if not self.fs.exists(self._path(version, METADATA)):
                    continue
                found.append(VersionEntry(version, self.metadata(version)))
            except MlError as exc:
                found.append(VersionEntry(version, None, str(exc)))
        return found

    def versions(self) -> list[dict[str, Any]]:
        """Metadata of every complete version whose metadata reads, oldest first."""
        return [entry.metadata for entry in self.listing() if entry.metadata is not None]

    def load(self, version: str = "latest") -> LoadedModel:
        """Load a version after checking its size and sha256 against its metadata.

        skops versions load with :data:`ml.artifacts.TRUSTED_TYPES`; joblib ones only with
        ``ML_ALLOW_PICKLE_MODELS=1``.
        """
        version = self.resolve(version)
        metadata = self.metadata(version)
        artifact = self._read_artifact(version, metadata)
        pipeline = self._build(version, metadata, artifact, allow_pickle=allow_pickle_models())
        return LoadedModel(version=version, pipeline=pipeline, metadata=metadata)

    def verify(self, version: str) -> list[tuple[str, str]]:
        """Check a version as a pointer move needs it: what was checked, or the first failure raised.

        Names (the version, the pointer read, the artifact's), the metadata's fields, the artifact's
        size and sha256, and that it loads with the safe loader alone (never a pickle, whatever
        ``ML_ALLOW_PICKLE_MODELS`` says) and predicts.
        """
        version = self.resolve(version)
        metadata = self.metadata(version)
        fmt, artifact_name = _format_and_artifact(metadata)
        label = f"model {self.name}/{version}"
        checks = [("names", f"{self.name}/{version}/{artifact_name} inside {self.store}")]
        problems = [
            f"{key} is {metadata.get(key)!r}, expected {expected!r}"
            for key, expected in (("name", self.name), ("version", version))
            if metadata.get(key) != expected
        ]
        if not _SHA256.fullmatch(str(metadata.get("sha256"))):
            problems.append(f"sha256 is {metadata.get('sha256')!r}, not 64 hex digits")
        if type(metadata.get("size_bytes")) is not int:
            problems.append(f"size_bytes is {metadata.get('size_bytes')!r}, not an integer")
        try:
            _macro_f1(metadata.get("metrics"), "it")
        except IntegrityError as exc:
            problems.append(str(exc).removeprefix("it: "))
        if problems:
            raise IntegrityError(f"{label}: metadata: {'; '.join(problems)}")
        provenance = f"image {metadata.get('image_digest') or 'not recorded'}, "
        provenance += f"source revision {metadata.get('source_revision') or 'not recorded'}"
        checks.append(("metadata", f"format {fmt}, created {metadata.get('created_at')}, {provenance}"))
        data = self._read_artifact(version, metadata)
        checks.append(("artifact", f"{artifact_name}: {len(data)} bytes, sha256 {metadata['sha256']}"))
        pipeline = self._build(version, metadata, data, allow_pickle=False)
        checks.append(("load", f"{fmt} with the trusted types only; predicts {len(pipeline.classes_)} classes"))
        return checks

    def _read_artifact(self, version: str, metadata: dict[str, Any]) -> bytes:
        """The artifact's bytes, refused unless their size and sha256 are the metadata's."""
        _, name = _format_and_artifact(metadata)
        try:
            artifact = self._read(self._path(version, name))
        except FileNotFoundError as exc:
            raise IntegrityError(f"model {self.name}/{version}: artifact is missing") from exc
        digest = hashlib.sha256(artifact).hexdigest()
        if len(artifact) != metadata.get("size_bytes") or digest != metadata.get("sha256"):
            raise IntegrityError(
                f"model {self.name}/{version}: artifact is corrupt or truncated "
                f"({len(artifact)} bytes, sha256 {digest[:12]}…; metadata says "
                f"{metadata.get('size_bytes')} bytes, sha256 {str(metadata.get('sha256'))[:12]}…)"
            )
        return artifact

    def _build(self, version: str, metadata: dict[str, Any], artifact: bytes, *, allow_pickle: bool) -> Any:
        """The pipeline in verified bytes, loaded in their format and made to predict one record."""
        fmt, _ = _format_and_artifact(metadata)
        pipeline = artifacts.loads(artifact, fmt, allow_pickle=allow_pickle, label=f"model {self.name}/{version}")
        from ml.model import predict  # scikit-learn: only loading needs it, not listing or inspecting

        try:
            # Loaded bytes can still be a model this code can't run (written by an older version):
            # find out here, not in a worker half-way through a batch.
            predict(pipeline, _PROBE)
        except Exception as exc:
            raise BadInputError(
                f"model {self.name}/{version} cannot be used by this code "
                f"(trained with code {metadata.get('code_version')}): {type(exc).__name__}: {exc}"
            ) from exc
        return pipeline


def _macro_f1(metrics: object, what: str) -> float:
    """``metrics["macro_f1"]``, the number the quality gate compares, or a clear refusal."""
    value = metrics.get("macro_f1") if isinstance(metrics, dict) else None
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise IntegrityError(f"{what}: metrics.macro_f1 is {value!r}, not a number (the quality gate needs it)")
    return float(value)


def _artifact_fields(fmt: str, artifact: bytes) -> dict[str, Any]:
    """The metadata fields that describe an artifact's bytes."""
    return {
        "format": fmt,
        "artifact": artifacts.FILE_NAMES[fmt],
        "sha256": hashlib.sha256(artifact).hexdigest(),
        "size_bytes": len(artifact),
    }


def _format_and_artifact(metadata: dict[str, Any], what: str = "metadata") -> tuple[str, str]:
    """A version's artifact format and file name (metadata written before formats: joblib, model.joblib)."""
    fmt = metadata.get("format", artifacts.LEGACY_FORMAT)
    if fmt not in artifacts.FILE_NAMES:
        raise IntegrityError(f"{what}: format is {fmt!r}; known formats: {', '.join(artifacts.FILE_NAMES)}")
    return fmt, check_name(metadata.get("artifact", artifacts.FILE_NAMES[fmt]), f"{what}: artifact")
