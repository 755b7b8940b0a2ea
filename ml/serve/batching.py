"""Micro-batching: concurrent requests share one model call.

One model call has a fixed cost whatever its row count (~0.7 ms with ``ml.features.CompiledFeatures``,
~12 ms through scikit-learn's ``ColumnTransformer``), so eight requests in one call cost little more
than one. Requests queue here; a single worker takes everything queued (up to
``max_batch_records``) and runs it in one thread-pool call while the event loop keeps accepting.

The window: the worker remembers how many requests were recently in the system at once (queued or
being predicted) and, while fewer are queued, waits up to ``batch_window_ms`` for the rest: clients
that just got answers are about to send again. Without it, concurrent clients split into groups that
take turns, each waiting for the other's model call. A lone client is alone in the system, so it
never waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from ml.registry import LoadedModel
from ml.serve.inference import Columns, Result, run_model
from ml.serve.metrics import ServeMetrics
from ml.serve.settings import ServeSettings

log = logging.getLogger(__name__)

#: How many recent batches set the number of requests worth waiting for.
_HISTORY = 4


@dataclass
class _Item:
    model: LoadedModel
    columns: Columns
    future: asyncio.Future[Result] = field(repr=False)


class MicroBatcher:
    """Queue requests and answer them from shared model calls (one worker task, one model thread)."""

    def __init__(self, settings: ServeSettings, metrics: ServeMetrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self._queue: deque[_Item] = deque()
        self._wakeup = asyncio.Event()
        #: Peak number of requests in the system (queued or in a model call) per recent batch.
        self._recent: deque[int] = deque([1], maxlen=_HISTORY)
        self._in_system = 0
        self._peak = 0
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="micro-batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        for item in self._queue:
            item.future.cancel()
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def submit(self, model: LoadedModel, columns: Columns) -> Result:
        """Predict ``columns`` with ``model`` (the version the request started with)."""
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._queue.append(_Item(model, columns, future))
        self._in_system += 1
        self._peak = max(self._peak, self._in_system)
        self._wakeup.set()
        try:
            return await future
        finally:
            self._in_system -= 1

    async def _next_batch(self) -> list[_Item]:
        while not self._queue:
            self._wakeup.clear()
            await self._wakeup.wait()
        limit = self.settings.max_batch_records
        expected = max(self._recent)
        window = self.settings.batch_window_ms / 1000
        deadline = time.monotonic() + window
        batch: list[_Item] = []
        rows = 0
        while True:
            while self._queue and (not batch or rows + len(self._queue[0].columns) <= limit):
                item = self._queue.popleft()
                batch.append(item)
                rows += len(item.columns)
            remaining = deadline - time.monotonic()
            if len(batch) >= expected or rows >= limit or self._queue or remaining <= 0:
                return batch
            self._wakeup.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), remaining)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._next_batch()
            batch = [item for item in batch if not item.future.done()]  # clients that went away
            if not batch:
                continue
            self._recent.append(max(self._peak, len(batch)))
            self._peak = self._in_system
            outcomes = await loop.run_in_executor(self._executor, self._predict, batch)
            for item, outcome in zip(batch, outcomes, strict=True):
                if item.future.done():
                    continue
                if isinstance(outcome, BaseException):
                    item.future.set_exception(outcome)
                else:
                    item.future.set_result(outcome)

    def _predict(self, batch: list[_Item]) -> list[Result | BaseException]:
        """Runs in the model thread: one call per model version present in the batch."""
        outcomes: dict[int, Result | BaseException] = {}
        by_model: dict[int, list[int]] = {}
        for index, item in enumerate(batch):
            by_model.setdefault(id(item.model), []).append(index)
        for indices in by_model.values():
            items = [batch[i] for i in indices]
            try:
                results = self._call(items[0].model, [item.columns for item in items])
            except Exception:
                # One bad request must not fail its neighbours: retry them one by one.
                log.exception("batched model call failed; retrying %d requests singly", len(items))
                results = []
                for item in items:
                    try:
                        results.extend(self._call(item.model, [item.columns]))
                    except Exception as exc:
                        results.append(exc)  # type: ignore[arg-type]
            outcomes.update(zip(indices, results, strict=True))
        return [outcomes[i] for i in range(len(batch))]

    def _call(self, model: LoadedModel, parts: list[Columns]) -> list[Result]:
        started = time.perf_counter()
        predictions, results = run_model(model.pipeline, parts, self.settings.top_k, self.settings.review_threshold)
        self.metrics.batch_latency.observe(time.perf_counter() - started)
        self.metrics.batch_size.observe(sum(len(p) for p in parts))
        self.metrics.observe_predictions(
            predictions.category,
            predictions.confidence,
            np.asarray(predictions.needs_review(self.settings.review_threshold)),
        )
        return results

    @property
    def pending(self) -> int:
        return len(self._queue)
