"""Which version answers each record: LATEST, or the candidate in canary mode.

Canary assignment is a stable hash of the record id (``blake2b``, not Python's per-process salted
``hash``), so a record gets the same version on every replica, request and restart, and a share
``s`` sends the records whose hash falls below ``s`` to the candidate. Raising the share only
adds records to the candidate's side.
"""

from __future__ import annotations

import asyncio
import hashlib

from ml.serve.batching import MicroBatcher
from ml.serve.inference import Columns, Result, interleave
from ml.serve.settings import ServeSettings
from ml.serve.state import Models

_HASH_RANGE = float(2**64)


def canary_position(record_id: str) -> float:
    """The record's fixed place in [0, 1): the candidate answers it when below the canary share."""
    digest = hashlib.blake2b(record_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / _HASH_RANGE


async def answer(
    batcher: MicroBatcher, settings: ServeSettings, models: Models, columns: Columns, ids: list[str]
) -> Result:
    """Predict the records with the versions the mode gives them (``ids`` key the canary split)."""
    candidate = models.candidate
    if candidate is None or settings.candidate_mode == "off":
        return await batcher.submit(models.latest, columns)
    if settings.candidate_mode == "shadow":
        return await batcher.submit(models.latest, columns, shadow=candidate)
    to_candidate = [canary_position(record_id) < settings.canary_share for record_id in ids]
    if not any(to_candidate):
        return await batcher.submit(models.latest, columns)
    if all(to_candidate):
        return await batcher.submit(candidate, columns, role="candidate")
    latest_rows = [i for i, chosen in enumerate(to_candidate) if not chosen]
    candidate_rows = [i for i, chosen in enumerate(to_candidate) if chosen]
    latest_result, candidate_result = await asyncio.gather(
        batcher.submit(models.latest, columns.take(latest_rows)),
        batcher.submit(candidate, columns.take(candidate_rows), role="candidate"),
    )
    return interleave(len(columns), [(latest_rows, latest_result), (candidate_rows, candidate_result)])
