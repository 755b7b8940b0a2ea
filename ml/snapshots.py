"""Training snapshots: immutable, partitioned parquet copies of the labelled data a model learns from.

Layout::

    <store>/training/<snapshot-id>/part-00000.parquet ...   written first (by Dask, in parallel)
    <store>/training/<snapshot-id>/manifest.json            written last: counts, labels, schema, files

A snapshot directory without ``manifest.json`` is an interrupted write and is invisible, exactly like
a model version without metadata: readers only ever see complete snapshots. Snapshot ids start with
a UTC timestamp, so "latest" is the greatest id that has a manifest; no pointer file can go stale.
The manifest lists its part files and row count, and :func:`load_snapshot` checks both, so a
snapshot that lost a file is an error, not a silently smaller training set.
"""

from __future__ import annotations

import json
from typing import Any

import fsspec
import pandas as pd

from ml import schema
from ml.errors import InfrastructureError, IntegrityError, NotFoundError
from ml.registry import new_version, open_store, write_atomically

TRAINING_DIR = "training"
MANIFEST = "manifest.json"
#: Bumped when the manifest's meaning changes; readers refuse versions they don't know.
MANIFEST_FORMAT = 1


def new_snapshot_id() -> str:
    """Sortable, unique ids (UTC time then random bits), the same scheme as model versions."""
    return new_version()


def snapshot_root(store: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """Filesystem and ``<store>/training`` path."""
    fs, root = open_store(store)
    return fs, f"{root}/{TRAINING_DIR}"


def snapshot_url(store: str, snapshot_id: str) -> str:
    """The URL Dask writes parts to (keeps the store's scheme, e.g. ``s3://``)."""
    return f"{store.rstrip('/')}/{TRAINING_DIR}/{snapshot_id}"


def list_snapshots(store: str) -> list[str]:
    """Ids of complete snapshots (those with a manifest), oldest first."""
    fs, root = snapshot_root(store)
    try:
        fs.invalidate_cache(root)  # s3fs caches listings; another process may have published since
        if not fs.exists(root):
            return []
        entries = fs.ls(root, detail=False)
        ids = sorted(entry.rstrip("/").rsplit("/", 1)[-1] for entry in entries)
        return [i for i in ids if fs.exists(f"{root}/{i}/{MANIFEST}")]
    except Exception as exc:  # network, credentials, permissions: the store is unusable
        raise InfrastructureError(f"cannot list snapshots in {store}: {exc}") from exc


def resolve_snapshot(store: str, snapshot: str) -> str:
    """A concrete snapshot id for ``snapshot`` (an id or ``latest``)."""
    if snapshot.lower() != "latest":
        return snapshot
    ids = list_snapshots(store)
    if not ids:
        raise NotFoundError(f"no training snapshot in {store}/{TRAINING_DIR}: run `python -m ml refresh` first")
    return ids[-1]


def read_manifest(store: str, snapshot: str) -> dict[str, Any]:
    """The manifest of a complete snapshot; an incomplete or unknown one is not found."""
    snapshot_id = resolve_snapshot(store, snapshot)
    fs, root = snapshot_root(store)
    path = f"{root}/{snapshot_id}/{MANIFEST}"
    try:
        raw = fs.cat_file(path)
    except FileNotFoundError as exc:
        raise NotFoundError(
            f"no complete training snapshot {snapshot_id!r} in {store} (known: "
            f"{', '.join(list_snapshots(store)[-5:]) or 'none'})"
        ) from exc
    except Exception as exc:
        raise InfrastructureError(f"cannot read {path}: {exc}") from exc
    try:
        manifest: dict[str, Any] = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise IntegrityError(f"manifest of snapshot {snapshot_id} is not valid JSON: {exc}") from exc
    if manifest.get("format") != MANIFEST_FORMAT:
        raise IntegrityError(
            f"snapshot {snapshot_id} has manifest format {manifest.get('format')!r}; "
            f"this code reads format {MANIFEST_FORMAT}"
        )
    return manifest


def write_manifest(store: str, snapshot_id: str, manifest: dict[str, Any]) -> None:
    """Publish a snapshot: the manifest is its last write, so readers see all of it or nothing."""
    fs, root = snapshot_root(store)
    body = json.dumps({"format": MANIFEST_FORMAT, **manifest}, indent=2, default=str).encode()
    try:
        write_atomically(fs, f"{root}/{snapshot_id}/{MANIFEST}", body)
    except Exception as exc:
        raise InfrastructureError(f"cannot write the manifest of snapshot {snapshot_id}: {exc}") from exc


def load_snapshot(store: str, snapshot: str) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The labelled frame (schema columns and dtypes) of a snapshot id or ``latest``, and its manifest.

    Raises :class:`~ml.errors.NotFoundError` when there is no such complete snapshot and
    :class:`~ml.errors.IntegrityError` when its files don't add up to what the manifest promises.
    """
    manifest = read_manifest(store, snapshot)
    snapshot_id = manifest["snapshot_id"]
    fs, root = snapshot_root(store)
    paths = [f"{root}/{snapshot_id}/{name}" for name in manifest["files"]]
    try:
        frames = [pd.read_parquet(path, filesystem=fs) for path in paths]
    except FileNotFoundError as exc:
        raise IntegrityError(f"snapshot {snapshot_id} is missing a part file: {exc}") from exc
    except Exception as exc:
        raise InfrastructureError(f"cannot read snapshot {snapshot_id} from {store}: {exc}") from exc
    frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=schema.LABELED_COLUMNS)
    expected = int(manifest["rows"]["written"])
    if len(frame) != expected:
        raise IntegrityError(f"snapshot {snapshot_id} has {len(frame)} rows; its manifest says {expected}")
    return schema.coerce(frame, labeled=True), manifest
