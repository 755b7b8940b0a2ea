"""Isolation benchmark: do small requests keep their latency beside the largest accepted ones?

    .venv/bin/python bench/serving_isolation.py                  # trains on data/purchases_labeled.csv.gz
    .venv/bin/python bench/serving_isolation.py --store var/store

One server (``python -m ml serve`` at its defaults), one run: a client sends single-record
``/v1/classify`` requests one after another, first alone, then beside four clients (two on
``/v1/classify``, two on V2 infer) that each send, again and again, the largest input the service
accepts: ``ML_MAX_REQUEST_RECORDS`` records whose description and contract are at the per-field
limit, as close to ``ML_MAX_BODY_BYTES`` as that allows. The big clients run in their own process.
Printed: the small requests' p50 and p99 alone and beside the big ones, the p99 ratio (target:
within 3x), and what the big clients got through. Results also go to
``bench/results/serving_isolation.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from serving import (  # noqa: E402
    MODEL,
    RESULTS,
    _read_response,
    free_port,
    load_data,
    percentile,
    sample_records,
    start_ours,
    stop,
    train_store,
    v1_body,
)

from ml.serve.dataplane import MAX_TEXT_CHARS  # noqa: E402
from ml.serve.settings import ServeSettings  # noqa: E402

V2_PATH = f"/v2/models/{MODEL}/infer"


def largest_bodies(records: list[dict[str, Any]]) -> tuple[bytes, bytes]:
    """V1 and V2 bodies of the most records, each field at its limit, under the body limit."""
    settings = ServeSettings()
    n = settings.max_request_records
    size = MAX_TEXT_CHARS
    while True:
        rows = [
            {
                "id": f"big-{i}",
                "description": (records[i % len(records)]["description"] + " ") * size,
                "cost": records[i % len(records)]["cost"],
                "contract": "C" * size,
                "department": "",
            }
            for i in range(n)
        ]
        for row in rows:
            row["description"] = row["description"][:size]
        v1 = json.dumps({"records": rows}).encode()
        columns = {k: [r[k] for r in rows] for k in ("description", "contract", "department")}
        v2 = json.dumps(
            {
                "inputs": [
                    *({"name": k, "datatype": "BYTES", "shape": [n], "data": v} for k, v in columns.items()),
                    {"name": "cost", "datatype": "FP64", "shape": [n], "data": [r["cost"] for r in rows]},
                ]
            }
        ).encode()
        if max(len(v1), len(v2)) <= settings.max_body_bytes:
            return v1, v2
        size -= 50


async def _post(port: int, path: str, body: bytes, connection: list[Any]) -> int:
    if not connection:
        connection.extend(await asyncio.open_connection("127.0.0.1", port))
    reader, writer = connection
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    writer.write(head + body)
    status, _ = await _read_response(reader)
    return status


def big_clients(port: int, bodies: list[tuple[str, bytes]], answered: Any, failed: Any) -> None:
    """In a process of its own until terminated: each (path, body) sent again and again."""

    async def client(path: str, body: bytes) -> None:
        connection: list[Any] = []
        while True:
            try:
                status = await _post(port, path, body, connection)
            except (ConnectionError, asyncio.IncompleteReadError):
                connection.clear()
                status = 0
            counter = answered if status == 200 else failed
            with counter.get_lock():
                counter.value += 1

    async def main() -> None:
        await asyncio.gather(*(client(path, body) for path, body in bodies))

    asyncio.run(main())


async def small_client(port: int, bodies: list[bytes], n: int) -> tuple[list[float], int]:
    connection: list[Any] = []
    latencies, errors = [], 0
    for i in range(n):
        started = time.perf_counter()
        status = await _post(port, "/v1/classify", bodies[i % len(bodies)], connection)
        latencies.append(time.perf_counter() - started)
        errors += status != 200
    return latencies, errors


def summary(name: str, latencies: list[float], errors: int) -> dict[str, Any]:
    return {
        "clients": name,
        "requests": len(latencies),
        "errors": errors,
        "p50_ms": percentile(latencies, 50) * 1000,
        "p99_ms": percentile(latencies, 99) * 1000,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT / "data" / "purchases_labeled.csv.gz")
    parser.add_argument("--store", type=Path, help="serve this store's LATEST instead of training one")
    parser.add_argument("--requests", type=int, default=1000, help="small requests per phase")
    parser.add_argument("--warmup", type=int, default=100)
    args = parser.parse_args(argv)

    RESULTS.mkdir(parents=True, exist_ok=True)
    data = load_data(args.data)
    records = sample_records(data, 1000)
    small = [v1_body(r) for r in records]
    big_v1, big_v2 = largest_bodies(records)
    with tempfile.TemporaryDirectory(prefix="bench-isolation-") as tmp:
        store = args.store or Path(tmp) / "store"
        if args.store is None:
            train_store(data, store)
        port = free_port()
        server = start_ours(store, port, RESULTS / "serve-isolation.log")
        try:
            asyncio.run(small_client(port, small, args.warmup))
            alone = summary("alone", *asyncio.run(small_client(port, small, args.requests)))
            print(f"alone: p50 {alone['p50_ms']:.1f} ms, p99 {alone['p99_ms']:.1f} ms", flush=True)

            context = multiprocessing.get_context("spawn")
            answered, failed = context.Value("i", 0), context.Value("i", 0)
            bodies = [("/v1/classify", big_v1)] * 2 + [(V2_PATH, big_v2)] * 2
            hammer = context.Process(target=big_clients, args=(port, bodies, answered, failed))
            hammer.start()
            time.sleep(5)  # the big requests are in flight
            started = time.monotonic()
            beside = summary("beside 4 big clients", *asyncio.run(small_client(port, small, args.requests)))
            small_seconds = time.monotonic() - started
            hammer.terminate()
            hammer.join()
        finally:
            stop(server)

    ratio = beside["p99_ms"] / alone["p99_ms"]
    print()
    print(
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; {args.requests} single-record "
        f"/v1/classify requests per phase; big: {len(big_v1):,}-byte V1 and {len(big_v2):,}-byte V2 bodies of "
        f"{ServeSettings().max_request_records} records, 2 clients each"
    )
    print("| small requests | requests | errors | p50 ms | p99 ms |")
    print("|---|---|---|---|---|")
    for row in (alone, beside):
        print(f"| {row['clients']} | {row['requests']} | {row['errors']} | {row['p50_ms']:.1f} | {row['p99_ms']:.1f} |")
    verdict = (
        f"p99 beside the big clients / alone: {ratio:.2f}x (target <= 3x): {'MET' if ratio <= 3 else 'NOT MET'}; "
        f"meanwhile the big clients got {answered.value} answers ({failed.value} errors) in "
        f"{small_seconds + 5:.0f} s ({answered.value * ServeSettings().max_request_records / (small_seconds + 5):.0f}"
        " big records/s)"
    )
    print(verdict)
    (RESULTS / "serving_isolation.json").write_text(
        json.dumps({"alone": alone, "beside": beside, "p99_ratio": ratio, "verdict": verdict}, indent=2)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
