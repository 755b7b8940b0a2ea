"""A real Dask cluster as separate OS processes, started with the project's own CLI.

Unlike a ``LocalCluster``, each worker is a process the test can kill (``SIGKILL``, no nanny to
restart it), and the scheduler address is what a CronJob would get in ``DASK_SCHEDULER_ADDRESS``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from distributed import Client

from tests.support.ports import free_port


@dataclass
class DaskProcesses:
    workdir: Path
    address: str = ""
    scheduler: subprocess.Popen | None = None
    workers: list[subprocess.Popen] = field(default_factory=list)

    def start(self, n_workers: int = 2, preload: Path | None = None, timeout: float = 60) -> DaskProcesses:
        port = free_port()
        self.address = f"tcp://127.0.0.1:{port}"
        self.scheduler = self._spawn("scheduler", ["--host", "127.0.0.1", "--port", str(port), "--no-dashboard"])
        for index in range(n_workers):
            extra = ["--preload", str(preload)] if preload else []
            self.add_worker(f"w{index}", extra)
        deadline = time.monotonic() + timeout
        with Client(self.address, timeout=f"{timeout}s") as client:
            client.wait_for_workers(n_workers, timeout=max(1.0, deadline - time.monotonic()))
        return self

    def add_worker(self, name: str, extra: list[str] | None = None) -> subprocess.Popen:
        worker = self._spawn(
            f"worker-{name}",
            [
                self.address,
                "--name",
                name,
                "--nthreads",
                "1",
                "--no-nanny",
                "--no-dashboard",
                "--local-directory",
                str(self.workdir),
                *(extra or []),
            ],
        )
        self.workers.append(worker)
        return worker

    def _spawn(self, log_name: str, args: list[str]) -> subprocess.Popen:
        role = "scheduler" if log_name == "scheduler" else "worker"
        log = open(self.workdir / f"{log_name}.log", "wb")  # noqa: SIM115 - closed with the process
        return subprocess.Popen(
            [sys.executable, "-m", "ml", "dask", role, *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )

    def stop(self) -> None:
        for process in [*self.workers, self.scheduler]:
            if process and process.poll() is None:
                process.terminate()
        for process in [*self.workers, self.scheduler]:
            if process:
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    process.kill()
