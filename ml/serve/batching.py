"""Micro-batching: concurrent requests share one model call, and no request monopolises it.

One model call has a fixed cost whatever its row count (~0.7 ms with ``ml.features.CompiledFeatures``,
~12 ms through scikit-learn's ``ColumnTransformer``), so eight requests in one call cost little more
than one. Requests queue here; a single worker builds each model call from what is waiting and runs it
in one thread-pool call while the event loop keeps accepting.

Fairness: a call holds at most ``max_batch_records`` rows and ``max_batch_chars`` characters of text
(the model's cost grows with both, ~1 µs a character). The waiting requests with the least text left
choose first and each may take an equal share of what the call has left, so a one-record request
that arrives beside big ones rides in the very next call: it waits for at most the one bounded call
in progress, not for the big requests' whole work. A request bigger than its share is answered over
several calls, each taking its next rows. Rows of a request whose client went away (its future cancelled) are
dropped before they reach the model.

The window: the worker remembers how many requests were recently in the system at once (queued or
being predicted) and, while fewer are queued, waits up to ``batch_window_ms`` for the rest: clients
that just got answers are about to send again. Without it, concurrent clients split into groups that
take turns, each waiting for the other's model call. A lone client is alone in the system, so it
never waits.

Shadow mode: once a call's answers are handed back, the same model thread scores its shadowed rows
with the candidate and counts how often it agrees with LATEST. Clients never wait for it; the next
call does, which is the shadow's cost (``bench/serving.py`` measures it).
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

from ml.decisions import review_threshold
from ml.registry import LoadedModel
from ml.serve.inference import Columns, Result, run_model
from ml.serve.metrics import ServeMetrics
from ml.serve.settings import ServeSettings

log = logging.getLogger(__name__)

#: How many recent batches set the number of requests worth waiting for.
_HISTORY = 4


@dataclass
class _Job:
    """One submitted request: its rows are handed to model calls in order, a share at a time."""

    model: LoadedModel
    role: str
    columns: Columns
    future: asyncio.Future[Result] = field(repr=False)
    #: The candidate that also scores these rows (shadow mode), not answering them.
    shadow: LoadedModel | None = None
    #: Characters of text per row: a call's character budget is counted with them.
    chars: list[int] = field(default_factory=list, repr=False)
    #: The first row not yet given to a model call, and the characters from it on.
    next_row: int = 0
    chars_left: int = 0
    #: Answers of the rows handed out so far, in row order (one model thread: calls end in order).
    pieces: list[Result] = field(default_factory=list, repr=False)
    answered: int = 0

    @property
    def handed_out(self) -> bool:
        return self.next_row >= len(self.columns)


@dataclass
class _Slice:
    """Consecutive rows of a job, in one model call."""

    job: _Job
    columns: Columns


class MicroBatcher:
    """Queue requests and answer them from shared, bounded model calls (one worker task, one model thread)."""

    def __init__(self, settings: ServeSettings, metrics: ServeMetrics) -> None:
        self.settings = settings
        self.metrics = metrics
        #: Requests with rows not yet handed to a model call, in turn order.
        self._waiting: deque[_Job] = deque()
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
        for job in self._waiting:
            job.future.cancel()
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def submit(
        self, model: LoadedModel, columns: Columns, role: str = "latest", shadow: LoadedModel | None = None
    ) -> Result:
        """Predict ``columns`` with ``model`` (a version the request started with, in ``role``);
        ``shadow`` also scores them once the answer is out. Cancelling the caller drops the rows
        not yet predicted."""
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        chars = [
            len(d) + len(c) + len(p)
            for d, c, p in zip(columns.description, columns.contract, columns.department, strict=True)
        ]
        self._waiting.append(_Job(model, role, columns, future, shadow, chars, chars_left=sum(chars)))
        self._in_system += 1
        self._peak = max(self._peak, self._in_system)
        self._wakeup.set()
        try:
            return await future
        finally:
            self._in_system -= 1

    def _live(self) -> list[_Job]:
        """The waiting jobs whose clients still wait (drops the others from the line)."""
        live = [job for job in self._waiting if not job.future.done()]
        if len(live) != len(self._waiting):
            self._waiting = deque(live)
        return live

    async def _next_batch(self) -> list[_Slice]:
        limit = self.settings.max_batch_records
        while True:
            while not self._live():
                self._wakeup.clear()
                await self._wakeup.wait()
            expected = max(self._recent)
            deadline = time.monotonic() + self.settings.batch_window_ms / 1000
            while len(self._waiting) < expected and sum(len(j.columns) - j.next_row for j in self._waiting) < limit:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._wakeup.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), remaining)
            batch = self._take()
            if batch:
                return batch

    def _take(self) -> list[_Slice]:
        """One call's rows, shared out like water filling: the waiting jobs with the least text
        left go first, each may take an equal share of what the call has left (at least one row
        while the call has room), so a small request takes all it needs and the rest flows to the
        big ones. Jobs with rows left go to the back of the line."""
        jobs = self._live()
        if not jobs:
            return []
        rows_left, chars_left = self.settings.max_batch_records, self.settings.max_batch_chars
        batch: list[_Slice] = []
        served: list[_Job] = []
        ordered = sorted(jobs, key=lambda job: job.chars_left)  # stable: turn order among equals
        for k, job in enumerate(ordered):
            if rows_left <= 0:
                break
            share_rows = max(1, rows_left // (len(ordered) - k))
            share_chars = max(1, chars_left // (len(ordered) - k))
            start = end = job.next_row
            taken = 0
            while end < len(job.columns) and end - start < share_rows:
                cost = job.chars[end]
                fits_share = taken + cost <= share_chars
                first_fits = end == start and (cost <= chars_left or not batch)
                if not (fits_share or first_fits):
                    break
                taken += cost
                end += 1
            if end == start:
                continue  # its next row does not fit this call: the next one
            rows_left -= end - start
            chars_left -= taken
            job.next_row = end
            job.chars_left -= taken
            batch.append(_Slice(job, job.columns.rows(start, end)))
            served.append(job)
        chosen = {id(job) for job in served}
        rest = [job for job in jobs if id(job) not in chosen]
        self._waiting = deque(rest + [job for job in served if not job.handed_out])
        return batch

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._next_batch()
            self._recent.append(max(self._peak, len(batch)))
            self._peak = self._in_system
            outcomes = await loop.run_in_executor(self._executor, self._predict, batch)
            for piece, outcome in zip(batch, outcomes, strict=True):
                job = piece.job
                if job.future.done():
                    continue
                if isinstance(outcome, BaseException):
                    job.future.set_exception(outcome)
                    continue
                job.pieces.append(outcome)
                job.answered += len(piece.columns)
                if job.answered == len(job.columns):
                    job.future.set_result(Result.concat(job.pieces))
            shadowed = [
                (piece, outcome)
                for piece, outcome in zip(batch, outcomes, strict=True)
                if piece.job.shadow is not None and isinstance(outcome, Result)
            ]
            if shadowed:
                try:
                    await loop.run_in_executor(self._executor, self._shadow, shadowed)
                except Exception:  # a shadow must never stop the worker that answers clients
                    log.exception("shadow scoring failed")

    def _predict(self, batch: list[_Slice]) -> list[Result | BaseException]:
        """Runs in the model thread: one call per model version present in the batch."""
        outcomes: dict[int, Result | BaseException] = {}
        by_model: dict[int, list[int]] = {}
        for index, piece in enumerate(batch):
            by_model.setdefault(id(piece.job.model), []).append(index)
        for indices in by_model.values():
            pieces = [batch[i] for i in indices]
            model, role = pieces[0].job.model, pieces[0].job.role
            try:
                results = self._call(model, role, [piece.columns for piece in pieces])
            except Exception:
                # One bad request must not fail its neighbours: retry them one by one.
                log.exception("batched model call failed; retrying %d requests singly", len(pieces))
                results = []
                for piece in pieces:
                    try:
                        results.extend(self._call(model, role, [piece.columns]))
                    except Exception as exc:
                        results.append(exc)  # type: ignore[arg-type]
            outcomes.update(zip(indices, results, strict=True))
        return [outcomes[i] for i in range(len(batch))]

    def _call(self, model: LoadedModel, role: str, parts: list[Columns], count_batch: bool = True) -> list[Result]:
        started = time.perf_counter()
        threshold, _ = review_threshold(model.metadata, self.settings.review_threshold)
        predictions, results = run_model(model, parts, self.settings.top_k, threshold)
        self.metrics.batch_latency.labels(model_version=model.version, role=role).observe(time.perf_counter() - started)
        if count_batch:
            self.metrics.batch_size.observe(sum(len(p) for p in parts))
        self.metrics.observe_predictions(
            model.version,
            role,
            predictions.category,
            predictions.confidence,
            np.asarray(predictions.needs_review(threshold)),
        )
        return results

    def _shadow(self, shadowed: list[tuple[_Slice, Result]]) -> None:
        """Runs in the model thread: the candidate scores the rows LATEST answered, and agreement is counted."""
        by_model: dict[int, list[tuple[_Slice, Result]]] = {}
        for pair in shadowed:
            by_model.setdefault(id(pair[0].job.shadow), []).append(pair)
        for pairs in by_model.values():
            candidate = pairs[0][0].job.shadow
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
