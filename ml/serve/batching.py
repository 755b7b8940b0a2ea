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

Shadow mode: once a batch's answers are handed back, the same model thread scores the batch's
shadowed rows with the candidate and counts how often it agrees with LATEST. Clients never wait for
it; the next batch does, which is the shadow's cost (``bench/serving.py`` measures it).
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
    role: str
    columns: Columns
    future: asyncio.Future[Result] = field(repr=False)
    #: The candidate that also scores these rows (shadow mode), not answering them.
    shadow: LoadedModel | None = None


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

    async def submit(
        self, model: LoadedModel, columns: Columns, role: str = "latest", shadow: LoadedModel | None = None
    ) -> Result:
        """Predict ``columns`` with ``model`` (a version the request started with, in ``role``);
        ``shadow`` also scores them once the answer is out."""
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._queue.append(_Item(model, role, columns, future, shadow))
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
            shadowed = [
                (item, outcome)
                for item, outcome in zip(batch, outcomes, strict=True)
                if item.shadow is not None and isinstance(outcome, Result)
            ]
            if shadowed:
                try:
                    await loop.run_in_executor(self._executor, self._shadow, shadowed)
                except Exception:  # a shadow must never stop the worker that answers clients
                    log.exception("shadow scoring failed")

    def _predict(self, batch: list[_Item]) -> list[Result | BaseException]:
        """Runs in the model thread: one call per model version present in the batch."""
        outcomes: dict[int, Result | BaseException] = {}
        by_model: dict[int, list[int]] = {}
        for index, item in enumerate(batch):
            by_model.setdefault(id(item.model), []).append(index)
        for indices in by_model.values():
            items = [batch[i] for i in indices]
            try:
                results = self._call(items[0].model, items[0].role, [item.columns for item in items])
            except Exception:
                # One bad request must not fail its neighbours: retry them one by one.
                log.exception("batched model call failed; retrying %d requests singly", len(items))
                results = []
                for item in items:
                    try:
                        results.extend(self._call(item.model, item.role, [item.columns]))
                    except Exception as exc:
                        results.append(exc)  # type: ignore[arg-type]
            outcomes.update(zip(indices, results, strict=True))
        return [outcomes[i] for i in range(len(batch))]

    def _call(self, model: LoadedModel, role: str, parts: list[Columns], count_batch: bool = True) -> list[Result]:
        started = time.perf_counter()
        predictions, results = run_model(model, parts, self.settings.top_k, self.settings.review_threshold)
        self.metrics.batch_latency.labels(model_version=model.version, role=role).observe(time.perf_counter() - started)
        if count_batch:
            self.metrics.batch_size.observe(sum(len(p) for p in parts))
        self.metrics.observe_predictions(
            model.version,
            role,
            predictions.category,
            predictions.confidence,
            np.asarray(predictions.needs_review(self.settings.review_threshold)),
        )
        return results

    def _shadow(self, shadowed: list[tuple[_Item, Result]]) -> None:
        """Runs in the model thread: the candidate scores the rows LATEST answered, and agreement is counted."""
        by_model: dict[int, list[tuple[_Item, Result]]] = {}
        for pair in shadowed:
            by_model.setdefault(id(pair[0].shadow), []).append(pair)
        for pairs in by_model.values():
            candidate = pairs[0][0].shadow
            assert candidate is not None
            served = [category for _, answer in pairs for category in answer.category]
            counter = self.metrics.shadow_comparisons
            try:
                results = self._call(candidate, "candidate", [item.columns for item, _ in pairs], count_batch=False)
            except Exception:
                log.exception("shadow call of candidate %s failed on %d records", candidate.version, len(served))
                counter.labels(model_version=candidate.version, result="error").inc(len(served))
                continue
            shadow = [category for result in results for category in result.category]
            agree = sum(a == b for a, b in zip(served, shadow, strict=True))
            counter.labels(model_version=candidate.version, result="agree").inc(agree)
            counter.labels(model_version=candidate.version, result="disagree").inc(len(served) - agree)

    @property
    def pending(self) -> int:
        return len(self._queue)
