"""Kubernetes CPU and memory quantities as numbers (millicores, bytes).

The schema validates them, the capacity check adds them up and the Dask builders derive worker
settings from them: all through these two functions.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

_CPU_RE = re.compile(r"^(\d+(\.\d+)?)(m?)$")
_MEM_RE = re.compile(r"^(\d+(\.\d+)?)(Ki|Mi|Gi|Ti|k|M|G|T)?$")
_MEM_FACTORS = {
    None: 1,
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
}
MIB = 2**20
GIB = 2**30


def cpu_millicores(value: str) -> int:
    """Kubernetes CPU quantity (``"250m"``, ``"1"``, ``"0.5"``) in millicores."""
    m = _CPU_RE.match(value)
    if not m:
        raise ValueError(f"{value!r} is not a CPU quantity (e.g. '250m', '1', '1.5')")
    number = Decimal(m.group(1))
    return int(number if m.group(3) else number * 1000)


def memory_bytes(value: str) -> int:
    """Kubernetes memory quantity (``"512Mi"``, ``"2Gi"``, ``"1G"``) in bytes."""
    m = _MEM_RE.match(value)
    if not m:
        raise ValueError(f"{value!r} is not a memory quantity (e.g. '512Mi', '2Gi')")
    try:
        return int(Decimal(m.group(1)) * _MEM_FACTORS[m.group(3)])
    except InvalidOperation as exc:  # pragma: no cover - the regex admits only decimals
        raise ValueError(f"{value!r} is not a memory quantity") from exc
