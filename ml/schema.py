"""The purchase record schema and the validation every job runs before it trusts data.

Validation never drops rows silently: it returns a report naming every bad row and why, and the
caller decides (training refuses data whose bad share exceeds a limit; refresh excludes and reports).
"""

from __future__ import annotations

import argparse
import codecs
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ml.errors import BadInputError

ID = "id"
DESCRIPTION = "description"
COST = "cost"
CONTRACT = "contract"
DEPARTMENT = "department"
CATEGORY = "category"

FEATURE_COLUMNS = [DESCRIPTION, COST, CONTRACT, DEPARTMENT]
TEXT_COLUMNS = [ID, DESCRIPTION, CONTRACT, DEPARTMENT, CATEGORY]
RECORD_COLUMNS = [ID, *FEATURE_COLUMNS]
LABELED_COLUMNS = [*RECORD_COLUMNS, CATEGORY]

#: How many bad ids a report spells out; the count is always exact.
_SHOWN_IDS = 20


@dataclass
class ValidationReport:
    """Which rows failed validation and why (one reason per failed rule)."""

    n_rows: int
    bad: dict[str, list[str]] = field(default_factory=dict)  # reason -> ids
    #: Row positions that failed any rule (ids can be empty or duplicated, positions can't).
    bad_rows: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool), repr=False)

    @property
    def n_bad(self) -> int:
        return int(self.bad_rows.sum())

    @property
    def bad_share(self) -> float:
        return self.n_bad / self.n_rows if self.n_rows else 0.0

    def summary(self) -> str:
        if not self.bad:
            return f"{self.n_rows} rows, all valid"
        lines = [f"{self.n_bad} of {self.n_rows} rows invalid ({self.bad_share:.1%}):"]
        for reason, ids in self.bad.items():
            shown = ", ".join(ids[:_SHOWN_IDS]) + (" …" if len(ids) > _SHOWN_IDS else "")
            lines.append(f"  {len(ids)} rows: {reason} (ids: {shown})")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, object]:
        return {"n_rows": self.n_rows, "n_bad": self.n_bad, "bad": self.bad}


#: Text encoding of CSV input unless ``--encoding`` says otherwise.
DEFAULT_ENCODING = "utf-8"


def _is_parquet(path: str) -> bool:
    lower = path.lower()
    return lower.endswith((".parquet", ".pq")) or lower.rstrip("/").endswith(("/", "parquet"))


def _csv_options(encoding: str) -> dict[str, Any]:
    """How every CSV is parsed: text columns stay text (an id of ``007`` keeps its zeros), only a
    cost can be missing, and bytes that are not ``encoding`` are an error, never replaced."""
    return {
        "dtype": {c: "string" for c in TEXT_COLUMNS},
        "keep_default_na": False,
        "na_values": {COST: ["", "NA", "NaN", "nan"]},
        "encoding": encoding,
        "encoding_errors": "strict",
    }


@contextmanager
def _read_errors_as_bad_input(path: str, encoding: str) -> Iterator[None]:
    """Refuse an unknown ``encoding`` up front, then turn a failed read of ``path`` inside the block
    into :class:`BadInputError` naming the file and, for undecodable text, the option to pass."""
    try:
        codecs.lookup(encoding)
    except LookupError as exc:
        raise BadInputError(f"unknown encoding {encoding!r} (--encoding); e.g. utf-8, cp1252, latin-1") from exc
    try:
        yield
    except FileNotFoundError as exc:
        raise BadInputError(f"data file not found: {path}") from exc
    except UnicodeDecodeError as exc:
        raise BadInputError(
            f"cannot read {path} as {encoding} text ({exc}); pass the file's encoding with --encoding, "
            "e.g. --encoding cp1252 for Windows exports or --encoding latin-1"
        ) from exc
    except (ValueError, pd.errors.ParserError, OSError) as exc:
        raise BadInputError(f"cannot read {path}: {exc}") from exc


def read_records(
    path: str, storage_options: dict[str, object] | None = None, encoding: str = DEFAULT_ENCODING
) -> pd.DataFrame:
    """Read a CSV (in ``encoding``) or parquet file (local path or any fsspec URL) with the schema's dtypes.

    Hospital exports are often Windows-1252 or Latin-1: a file that is not valid ``encoding`` is
    refused with the option to pass, never read with replacement characters.
    """
    with _read_errors_as_bad_input(path, encoding):
        if _is_parquet(path):
            return pd.read_parquet(path, storage_options=storage_options)
        return pd.read_csv(path, storage_options=storage_options, **_csv_options(encoding))


def read_record_chunks(path: str, encoding: str, chunk_rows: int) -> Iterator[pd.DataFrame]:
    """A records file ``chunk_rows`` rows at a time, typed and refused as :func:`read_records` does.

    Each chunk's index continues the previous one's, so a bad row's position names it in reports.
    """
    with _read_errors_as_bad_input(path, encoding):
        if _is_parquet(path):
            import fsspec
            import pyarrow.dataset

            fs, root = fsspec.core.url_to_fs(path)
            start = 0
            for batch in pyarrow.dataset.dataset(root, filesystem=fs, format="parquet").to_batches(
                batch_size=chunk_rows
            ):
                frame = batch.to_pandas()
                frame.index = pd.RangeIndex(start, start + len(frame))
                start += len(frame)
                yield frame
            return
        with pd.read_csv(path, chunksize=chunk_rows, **_csv_options(encoding)) as reader:
            yield from reader


def add_encoding_argument(parser: argparse.ArgumentParser) -> None:
    """``--encoding`` for every command that reads a records file."""
    parser.add_argument(
        "--encoding",
        default=DEFAULT_ENCODING,
        help=f"text encoding of CSV input (default {DEFAULT_ENCODING}; hospital exports are often cp1252 or latin-1)",
    )


def coerce(frame: pd.DataFrame, *, labeled: bool) -> pd.DataFrame:
    """Return the schema's columns with their types; missing required columns are bad input.

    Values that don't parse (a cost of ``"abc"``) become missing here and are caught by
    :func:`validate` through the raw column, so nothing is converted away unnoticed.
    """
    required = LABELED_COLUMNS if labeled else RECORD_COLUMNS
    missing = [c for c in (ID, DESCRIPTION, *([CATEGORY] if labeled else [])) if c not in frame.columns]
    if missing:
        raise BadInputError(f"missing required column(s): {', '.join(missing)}; expected {required}")
    out = pd.DataFrame(index=frame.index)
    for column in required:
        if column == COST:
            raw = frame[COST] if COST in frame.columns else pd.Series(np.nan, index=frame.index)
            out[COST] = pd.to_numeric(raw, errors="coerce").astype("float64")
        elif column in frame.columns:
            out[column] = frame[column].astype("string").fillna("")
        else:
            out[column] = pd.Series("", index=frame.index, dtype="string")
    return out


def validate(frame: pd.DataFrame, *, labeled: bool) -> ValidationReport:
    """Check every row against the schema; ``frame`` is raw input (before :func:`coerce`)."""
    typed = coerce(frame, labeled=labeled)
    ids = typed[ID].where(typed[ID].str.strip() != "", "<row " + typed.index.astype(str) + ">")
    report = ValidationReport(n_rows=len(typed), bad_rows=np.zeros(len(typed), dtype=bool))

    def flag(mask: pd.Series, reason: str) -> None:
        hits = mask.to_numpy(dtype=bool, na_value=False)
        if hits.any():
            report.bad[reason] = [str(i) for i in ids[hits]]
            report.bad_rows |= hits

    flag(typed[ID].str.strip() == "", "id is empty")
    flag(typed[ID].duplicated(keep="first") & (typed[ID].str.strip() != ""), "id is duplicated")
    flag(typed[DESCRIPTION].str.strip() == "", "description is empty")
    if COST in frame.columns:
        raw_cost = frame[COST]
        present = raw_cost.notna() & (raw_cost.astype("string").str.strip() != "")
        flag(present & typed[COST].isna(), "cost is not a number")
    flag(typed[COST] < 0, "cost is negative")
    flag(np.isinf(typed[COST].fillna(0)), "cost is infinite")
    if labeled:
        flag(typed[CATEGORY].str.strip() == "", "category is empty")
    return report


def clean(frame: pd.DataFrame, *, labeled: bool, max_bad_share: float) -> tuple[pd.DataFrame, ValidationReport]:
    """Validate, refuse when too much is bad, and return the good rows with the report.

    The report goes with the result so every caller prints or stores it: excluded rows are always
    accounted for.
    """
    report = validate(frame, labeled=labeled)
    if report.bad_share > max_bad_share:
        raise BadInputError(
            f"{report.summary()}\nrefusing: bad-row share {report.bad_share:.1%} exceeds the limit "
            f"{max_bad_share:.1%} (--max-bad-share)"
        )
    typed = coerce(frame, labeled=labeled)
    good = typed[~report.bad_rows].reset_index(drop=True)
    return good, report
