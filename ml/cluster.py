"""Connect to Dask: the scheduler Service in the cluster, or a local cluster on a laptop.

Client, scheduler and workers must run the same packages (the project ships one image for all
three); a mismatch otherwise shows up much later as unpicklable tasks or wrong results, so it is
checked before any work is submitted.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import metadata

from distributed import Client, LocalCluster

from ml.errors import InfrastructureError
from ml.settings import SCHEDULER_ENV

#: Packages whose versions must agree across client, scheduler and workers.
CHECKED_PACKAGES = (
    "dask",
    "distributed",
    "cloudpickle",
    "msgpack",
    "numpy",
    "pandas",
    "pyarrow",
    "scikit-learn",
    "joblib",
    "purchase-classifier",
)


def package_versions() -> dict[str, str]:
    """Versions of the checked packages in this process (runs on workers and the scheduler too)."""
    found = {"python": ".".join(map(str, sys.version_info[:2]))}
    for name in CHECKED_PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "missing"
    return found


def check_versions(client: Client) -> None:
    """Fail with a table of differences when any process runs other package versions."""
    mine = package_versions()
    others = {"scheduler": client.run_on_scheduler(package_versions)}
    others.update(client.run(package_versions))
    problems = [
        f"  {package}: client {version}, {where} {theirs.get(package, 'missing')}"
        for where, theirs in others.items()
        for package, version in mine.items()
        if theirs.get(package) != version
    ]
    if problems:
        raise InfrastructureError(
            "Dask package versions differ between client, scheduler and workers "
            "(run one image everywhere):\n" + "\n".join(problems)
        )


@contextmanager
def dask_client(
    address: str | None = None,
    *,
    timeout: float = 30.0,
    local_workers: int | None = None,
    wait_for_workers: int = 1,
) -> Iterator[Client]:
    """A checked client: ``address`` or ``$DASK_SCHEDULER_ADDRESS``, else a local process cluster.

    Connection and the wait for workers are bounded by ``timeout`` so a missing scheduler is an
    error within seconds, never a hang.
    """
    address = address or os.environ.get(SCHEDULER_ENV) or None
    cluster: LocalCluster | None = None
    try:
        if address:
            client = Client(address, timeout=f"{timeout}s")
        else:
            cluster = LocalCluster(
                n_workers=local_workers or min(2, os.cpu_count() or 1),
                threads_per_worker=1,
                processes=True,
                dashboard_address=":0",
            )
            client = Client(cluster)
    except (OSError, TimeoutError) as exc:
        raise InfrastructureError(
            f"Dask scheduler {address} is unreachable (waited {timeout:.0f}s, set {SCHEDULER_ENV} "
            f"or leave it empty for a local cluster): {exc}"
        ) from exc
    clean = False
    try:
        try:
            client.wait_for_workers(wait_for_workers, timeout=timeout)
        except TimeoutError as exc:
            raise InfrastructureError(
                f"Dask scheduler {address or '(local)'} has no workers after {timeout:.0f}s"
            ) from exc
        check_versions(client)
        yield client
        clean = True
    finally:
        client.close()
        if cluster is not None:
            close_local_cluster(cluster, quiet=clean)


def close_local_cluster(cluster: LocalCluster, *, quiet: bool) -> None:
    """Close a local cluster; after a clean run, without the nannies' "killing" warnings.

    A nanny gives its worker process a few seconds to exit and then kills it with a WARNING. On a
    busy machine a worker that has finished all its work often takes that long to unwind, and the
    warning then reads as a failure at the end of every successful demo. After a failure the
    warnings stay: they may be part of the story.
    """
    nanny_log = logging.getLogger("distributed.nanny")
    level = nanny_log.level
    if quiet:
        nanny_log.setLevel(logging.ERROR)
    try:
        cluster.close()
    finally:
        nanny_log.setLevel(level)
