"""Bring a stack back after an interrupted deploy: ``python -m infra.engine recover --stack S``.

A ``pulumi up`` or ``destroy`` that is killed (a CI runner lost, a job timeout, a cancel) leaves its
lock behind and, in the state, the operations it had started ("pending operations"): creates whose
object may or may not exist, deletes and updates half done. Every later run stops at the lock; once
it is removed, a pending create whose object does exist is unknown to the state. :func:`recover`
repairs both, with the engine's own tools:

1. it refuses while the lock's owner may still be running: a lock of this host whose process still
   runs, or a lock of another host younger than ``min_lock_age`` (no process can be checked there);
2. ``pulumi cancel`` removes the lock;
3. each pending create whose ID the program's names determine (a Kubernetes object's
   ``namespace/name``; a few AWS resources, :data:`AWS_IMPORT_IDS`), or whose ID a person gave
   (``--import URN=ID``), is imported: ``pulumi stack export``, the pending create becomes a
   resource with that ID, ``pulumi stack import``, then ``pulumi refresh`` reads it by its ID from
   the provider, recording it if it exists and dropping it if not. The same refresh settles the
   other pending operations (deletes, updates) against what is there. (The CLI's own
   ``refresh --import-pending-creates`` is not used: the CLI built here turns such creates into
   "importing" operations that its refresh then drops without reading them.)
4. while a refreshed Kubernetes object is still being deleted (a killed ``destroy``), it refreshes
   again until the object is gone, so the next ``up`` does not write into an object about to vanish;
5. pending creates whose ID it cannot tell are left as they are and printed with the exact
   command a person runs once they know the ID.

Objects the program manages carry one field manager per stack (:func:`infra.k8s.common.field_manager`),
so even an object whose create was never recorded is taken over by the next ``up``.
"""

from __future__ import annotations

import json
import os
import shlex
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import fsspec
from pulumi import automation as auto

from infra.naming import PROJECT

DEFAULT_MIN_LOCK_AGE = timedelta(minutes=60)
"""A lock taken on another host is assumed alive while younger than this: the deploy workflows'
longest job timeout is 60 minutes, so a younger lock may belong to a job still running."""
DELETION_WAIT = timedelta(minutes=10)
"""How long to wait for objects a killed ``destroy`` left being deleted (foreground deletion waits
for the garbage collector; a namespace for the namespace controller)."""
DELETION_POLL_S = 3.0

AWS_IMPORT_IDS: dict[str, Callable[[Mapping[str, Any]], str]] = {
    "aws:cloudwatch/logGroup:LogGroup": lambda i: i["name"],
    "aws:ecr/repository:Repository": lambda i: i["name"],
    "aws:eks/cluster:Cluster": lambda i: i["name"],
    "aws:eks/addon:Addon": lambda i: f"{i['clusterName']}:{i['addonName']}",
    "aws:iam/rolePolicyAttachment:RolePolicyAttachment": lambda i: f"{i['role']}/{i['policyArn']}",
    **dict.fromkeys(
        (
            "aws:s3/bucketOwnershipControls:BucketOwnershipControls",
            "aws:s3/bucketPolicy:BucketPolicy",
            "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock",
            "aws:s3/bucketVersioning:BucketVersioning",
            "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration",
            "aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration",
        ),
        lambda i: i["bucket"],
    ),
}
"""AWS resources whose import ID (as the provider's import documentation gives it) follows from the
names the program sets, recorded in the pending create's inputs. The others (a VPC, a bucket named
from a prefix, a KMS key) get their ID from AWS at creation: only a person can look it up."""


class RecoverError(Exception):
    """Recovery refused or failed; the message says why and what to do."""


@dataclass(frozen=True)
class Lock:
    """A lock file of the state backend (``.pulumi/locks/...``), as the CLI writes it."""

    path: str
    pid: int
    hostname: str
    username: str
    timestamp: datetime


def read_locks(backend: str, stack: str, project: str = PROJECT) -> list[Lock]:
    """The locks held on ``stack`` in a file or object-store backend (``file://``, ``s3://``...)."""
    fs, root = fsspec.core.url_to_fs(backend)
    locks = []
    # Project-scoped stacks (the CLI's default) and the older layout without a project.
    for directory in (f"{root}/.pulumi/locks/organization/{project}/{stack}", f"{root}/.pulumi/locks/{stack}"):
        for path in sorted(fs.glob(f"{directory}/*.json")):
            content = json.loads(fs.cat_file(path))
            locks.append(
                Lock(
                    path=path,
                    pid=int(content["pid"]),
                    hostname=content["hostname"],
                    username=content.get("username", ""),
                    timestamp=datetime.fromisoformat(content["timestamp"]),
                )
            )
    return locks


def _process_runs(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it runs
        return True
    # A killed process whose parent died too stays a zombie until init reaps it (a container's
    # init may never do): it answers signal 0 but runs nothing.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state not in {"Z", "X"}


def owner_may_be_alive(
    lock: Lock,
    *,
    min_age: timedelta = DEFAULT_MIN_LOCK_AGE,
    now: datetime | None = None,
    hostname: str | None = None,
    process_runs: Callable[[int], bool] = _process_runs,
) -> str | None:
    """Why ``lock``'s owner may still be running, or ``None`` when the lock is stale.

    On this host the process decides; for another host only the lock's age can tell.
    """
    hostname = hostname or socket.gethostname()
    now = now or datetime.now(UTC)
    owner = f"pid {lock.pid} on {lock.hostname} ({lock.username or 'unknown user'}), locked at {lock.timestamp}"
    if lock.hostname == hostname:
        return f"{owner}: that process is still running" if process_runs(lock.pid) else None
    age = now - lock.timestamp
    if age < min_age:
        return (
            f"{owner}: another host, and the lock is {int(age.total_seconds() // 60)} min old, younger than "
            f"{int(min_age.total_seconds() // 60)} min (--min-lock-age)"
        )
    return None


def stale_locks(backend: str, stack: str, min_age: timedelta = DEFAULT_MIN_LOCK_AGE) -> list[Lock]:
    """The locks on ``stack``, all stale; :class:`RecoverError` if any owner may still be running."""
    locks = read_locks(backend, stack)
    alive = [reason for lock in locks if (reason := owner_may_be_alive(lock, min_age=min_age))]
    if alive:
        raise RecoverError(
            f"stack {stack} is locked by a run that may still be going: {'; '.join(alive)}. "
            "Wait for it to end (or, once sure it has ended, pass a smaller --min-lock-age)."
        )
    return locks


def import_id(resource: Mapping[str, Any]) -> str | None:
    """The provider ID of a pending create's resource, when the program's names determine it."""
    inputs = resource.get("inputs") or {}
    type_ = resource["type"]
    if type_.startswith("kubernetes:") and resource.get("custom") and "kind" in inputs:
        meta = inputs.get("metadata") or {}
        name, namespace = meta.get("name"), meta.get("namespace")
        if not isinstance(name, str):
            return None  # an auto-named object: its name was chosen by the run that was lost
        return f"{namespace}/{name}" if isinstance(namespace, str) else name
    derive = AWS_IMPORT_IDS.get(type_)
    if derive is None:
        return None
    try:
        value = derive(inputs)
    except KeyError:
        return None
    return value if isinstance(value, str) and value else None


def _pending(deployment: Mapping[str, Any]) -> list[dict[str, Any]]:
    return list(deployment.get("pending_operations") or deployment.get("pendingOperations") or [])


def _resources(deployment: Mapping[str, Any]) -> list[dict[str, Any]]:
    return list(deployment.get("resources") or [])


def _being_deleted(deployment: Mapping[str, Any]) -> list[str]:
    """URNs of Kubernetes objects the refresh found with a ``deletionTimestamp``."""
    return [
        r["urn"]
        for r in _resources(deployment)
        if r["type"].startswith("kubernetes:")
        and ((r.get("outputs") or {}).get("metadata") or {}).get("deletionTimestamp")
    ]


@dataclass
class Recovery:
    """What :func:`recover` did."""

    cancelled_locks: list[Lock] = field(default_factory=list)
    imported: list[str] = field(default_factory=list)
    """Pending creates whose resource existed: now recorded in the state."""
    cleared: list[str] = field(default_factory=list)
    """Pending creates whose resource did not exist: dropped."""
    settled: list[str] = field(default_factory=list)
    """Other pending operations (``deleting``, ``updating``...), as ``<type> <urn>``, settled by the refresh."""
    manual: list[tuple[str, str]] = field(default_factory=list)
    """Pending creates left for a person: (URN, the command to run once the ID is known)."""


def manual_command(stack: str, urn: str, id_: str = "<ID>") -> str:
    """What a person runs for a pending create whose ID only they can find out."""
    return f"python -m infra.engine recover --stack {stack} --import {shlex.quote(f'{urn}={id_}')}"


def _adopt(deployment: Mapping[str, Any], ids: Mapping[str, str | None]) -> dict[str, Any]:
    """``deployment`` with each pending create in ``ids`` (URN to provider ID) made a resource with
    that ID, for a refresh to read, or dropped where the ID is ``None``. Appended after every
    resource: its parent, provider and dependencies were all complete before its create began, so
    the order stays topological."""
    pending, adopted = [], []
    for op in _pending(deployment):
        urn = op["resource"]["urn"]
        if op["type"] != "creating" or urn not in ids:
            pending.append(op)
        elif (id_ := ids[urn]) is not None:
            adopted.append({**op["resource"], "id": id_})
    return {**deployment, "resources": [*_resources(deployment), *adopted], "pending_operations": pending}


def recover(
    stack: auto.Stack,
    locks: list[Lock],
    *,
    given_ids: Mapping[str, str] | None = None,
    echo: Callable[[str], None] = print,
    on_output: auto.OnOutput | None = None,
    on_error: auto.OnOutput | None = None,
) -> Recovery:
    """Repair ``stack`` after an interrupted run whose ``locks`` :func:`stale_locks` found stale;
    ``given_ids``: provider IDs a person looked up, by URN. Prints each step through ``echo``."""
    done = Recovery()
    if locks:
        stack.cancel()  # `pulumi cancel --yes`: removes the lock files
        done.cancelled_locks = locks
        for lock in locks:
            echo(f"removed the stale lock of pid {lock.pid} on {lock.hostname} (taken at {lock.timestamp})")
    else:
        echo("no lock held")

    exported = stack.export_stack()
    before = exported.deployment or {}
    given = dict(given_ids or {})
    imports: dict[str, str] = {}
    internal: dict[str, None] = {}
    for op in _pending(before):
        urn, resource = op["resource"]["urn"], op["resource"]
        if op["type"] != "creating":
            done.settled.append(f"{op['type']} {urn}")
            continue
        if not resource.get("custom") or resource["type"].startswith("pulumi:providers:"):
            internal[urn] = None  # a component or a provider: nothing outside the state to find
            continue
        id_ = given.pop(urn, None) or import_id(resource)
        if id_ is None:
            done.manual.append((urn, manual_command(stack.name, urn)))
        else:
            imports[urn] = id_
    if given:
        raise RecoverError(f"--import names no pending create of stack {stack.name}: {', '.join(given)}")

    if imports or internal:
        edited = _adopt(before, {**imports, **internal})
        stack.import_stack(auto.Deployment(version=exported.version, deployment=edited))
        done.settled += [f"creating {urn} (nothing outside the state: dropped)" for urn in internal]
    echo(f"refreshing: {len(imports)} pending create(s) to read by ID, {len(done.settled)} other pending operation(s)")
    stack.refresh(color="never", on_output=on_output, on_error=on_error)

    deadline = time.monotonic() + DELETION_WAIT.total_seconds()
    state = stack.export_stack().deployment or {}
    while deleting := _being_deleted(state):
        if time.monotonic() > deadline:
            raise RecoverError(f"still being deleted after {DELETION_WAIT}: {', '.join(deleting)}")
        echo(f"waiting for {len(deleting)} object(s) being deleted: {', '.join(deleting)}")
        time.sleep(DELETION_POLL_S)
        stack.refresh(color="never", on_output=on_output, on_error=on_error)
        state = stack.export_stack().deployment or {}

    recorded = {r["urn"] for r in _resources(state)}
    for urn, id_ in imports.items():
        (done.imported if urn in recorded else done.cleared).append(f"{urn} ({id_})")
    for line in done.imported:
        echo(f"imported (it existed): {line}")
    for line in done.cleared:
        echo(f"cleared (it did not exist): {line}")
    for line in done.settled:
        echo(f"settled by the refresh: {line}")
    for urn, command in done.manual:
        echo(f"left pending, its ID is not known here: {urn}\n  once you know it: {command}")
    remaining = [op for op in _pending(state) if op["resource"]["urn"] not in {u for u, _ in done.manual}]
    if remaining:
        raise RecoverError(f"pending operations remain after the refresh: {remaining}")
    return done
