"""The Open Inference Protocol (KServe V2) for the same model, so standard V2 clients can call it.

Inputs are one tensor per record column, as MLServer's pandas codec sends them: ``description``
(required), ``contract``, ``department`` and ``id`` as ``BYTES`` (JSON strings), ``cost`` as any
numeric type; each of shape ``[n]`` or ``[n, 1]``. Outputs: ``category`` (BYTES ``[n]``),
``confidence`` (FP64 ``[n]``), ``needs_review`` (BOOL ``[n]``), ``top_categories`` (BYTES ``[n, k]``)
and ``top_probabilities`` (FP64 ``[n, k]``). Errors are ``{"error": "..."}`` with a 4xx status, as
the protocol specifies.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ml.serve.inference import Columns, Result

Datatype = Literal[
    "BOOL",
    "UINT8",
    "UINT16",
    "UINT32",
    "UINT64",
    "INT8",
    "INT16",
    "INT32",
    "INT64",
    "FP16",
    "FP32",
    "FP64",
    "BYTES",
]
_NUMERIC = {"UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP16", "FP32", "FP64"}
_TEXT_INPUTS = ("description", "contract", "department", "id")
INPUT_NAMES = (*_TEXT_INPUTS, "cost")
OUTPUT_NAMES = ("category", "confidence", "needs_review", "top_categories", "top_probabilities")


class V2Error(Exception):
    """A request the protocol answers with ``{"error": message}`` and ``status``."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


class RequestInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    shape: list[int] = Field(min_length=1, max_length=2)
    datatype: Datatype
    parameters: dict[str, Any] | None = None
    data: list[Any]


class RequestOutput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    parameters: dict[str, Any] | None = None


class InferenceRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str | None = None
    parameters: dict[str, Any] | None = None
    inputs: list[RequestInput] = Field(min_length=1)
    outputs: list[RequestOutput] | None = None


class ResponseOutput(BaseModel):
    name: str
    shape: list[int]
    datatype: Datatype
    parameters: dict[str, Any] | None = None
    data: list[Any]


class InferenceResponse(BaseModel):
    model_name: str
    model_version: str | None = None
    id: str | None = None
    parameters: dict[str, Any] | None = None
    outputs: list[ResponseOutput]


class TensorMetadata(BaseModel):
    name: str
    datatype: Datatype
    shape: list[int]


class ModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]


class ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


class ErrorResponse(BaseModel):
    error: str


def _flatten(values: list[Any], name: str) -> list[Any]:
    """V2 JSON allows row-major nested arrays as well as flat ones."""
    if not any(isinstance(v, list) for v in values):
        return values
    flat: list[Any] = []
    for v in values:
        if isinstance(v, list):
            if any(isinstance(x, list) for x in v):
                raise V2Error(f"input '{name}': data nested deeper than two levels")
            flat.extend(v)
        else:
            raise V2Error(f"input '{name}': data mixes nested and flat values")
    return flat


def model_metadata(name: str, version: str | None, top_k: int) -> ModelMetadata:
    return ModelMetadata(
        name=name,
        versions=[version] if version else [],
        platform="sklearn",
        inputs=[
            TensorMetadata(name="description", datatype="BYTES", shape=[-1]),
            TensorMetadata(name="cost", datatype="FP64", shape=[-1]),
            TensorMetadata(name="contract", datatype="BYTES", shape=[-1]),
            TensorMetadata(name="department", datatype="BYTES", shape=[-1]),
        ],
        outputs=[
            TensorMetadata(name="category", datatype="BYTES", shape=[-1]),
            TensorMetadata(name="confidence", datatype="FP64", shape=[-1]),
            TensorMetadata(name="needs_review", datatype="BOOL", shape=[-1]),
            TensorMetadata(name="top_categories", datatype="BYTES", shape=[-1, top_k]),
            TensorMetadata(name="top_probabilities", datatype="FP64", shape=[-1, top_k]),
        ],
    )


def decode(request: InferenceRequest, max_records: int) -> Columns:
    """Check the tensors and turn them into record columns (V2Error names what is wrong)."""
    tensors: dict[str, list[Any]] = {}
    rows: int | None = None
    for tensor in request.inputs:
        name = tensor.name
        if name not in INPUT_NAMES:
            raise V2Error(f"unknown input '{name}'; expected some of {', '.join(INPUT_NAMES)}")
        if name in tensors:
            raise V2Error(f"input '{name}' given twice")
        shape = tensor.shape
        if any(d < 0 for d in shape) or (len(shape) == 2 and shape[1] != 1):
            raise V2Error(f"input '{name}': shape {shape} must be [n] or [n, 1]")
        n = shape[0]
        if n > max_records:
            raise V2Error(f"{n} records exceed the limit of {max_records} per request", status=413)
        data = _flatten(tensor.data, name)
        if len(data) != n:
            raise V2Error(f"input '{name}': shape {shape} but {len(data)} values")
        if rows is not None and n != rows:
            raise V2Error(f"input '{name}' has {n} rows, other inputs {rows}")
        rows = n
        if name in _TEXT_INPUTS:
            if tensor.datatype != "BYTES":
                raise V2Error(f"input '{name}' must be BYTES, not {tensor.datatype}")
            for i, value in enumerate(data):
                if not isinstance(value, str):
                    raise V2Error(f"input '{name}'[{i}]: expected a string, got {type(value).__name__}")
        else:
            if tensor.datatype not in _NUMERIC:
                raise V2Error(f"input 'cost' must be numeric (FP64, INT64, ...), not {tensor.datatype}")
            for i, value in enumerate(data):
                if value is None:
                    continue
                if isinstance(value, bool) or not isinstance(value, int | float):
                    raise V2Error(f"input 'cost'[{i}]: expected a number, got {type(value).__name__}")
                try:
                    finite = math.isfinite(value)
                except OverflowError:  # an integer beyond float range
                    finite = False
                if not finite or value < 0:
                    raise V2Error(f"input 'cost'[{i}]: must be a finite number >= 0, got {value}")
        tensors[name] = data
    if "description" not in tensors:
        raise V2Error("input 'description' (BYTES) is required")
    if not rows:
        raise V2Error("at least one record is required")
    for i, text in enumerate(tensors["description"]):
        if not text.strip():
            raise V2Error(f"input 'description'[{i}]: must not be empty")
    columns = Columns()
    blanks = [None] * rows
    for d, c, k, p in zip(
        tensors["description"],
        tensors.get("cost", blanks),
        tensors.get("contract", blanks),
        tensors.get("department", blanks),
        strict=True,
    ):
        columns.add(d, c, k, p)
    return columns


def encode(request: InferenceRequest, result: Result, model_name: str, version: str) -> dict[str, Any]:
    """The response as a plain dict (serialised directly; the schema above documents it)."""
    n = len(result.category)
    k = len(result.top_categories[0]) if n else 0
    outputs = {
        "category": {"name": "category", "datatype": "BYTES", "shape": [n], "data": result.category},
        "confidence": {"name": "confidence", "datatype": "FP64", "shape": [n], "data": result.confidence},
        "needs_review": {
            "name": "needs_review",
            "datatype": "BOOL",
            "shape": [n],
            "data": result.needs_review,
        },
        "top_categories": {
            "name": "top_categories",
            "datatype": "BYTES",
            "shape": [n, k],
            "data": [c for row in result.top_categories for c in row],
        },
        "top_probabilities": {
            "name": "top_probabilities",
            "datatype": "FP64",
            "shape": [n, k],
            "data": [p for row in result.top_probabilities for p in row],
        },
    }
    wanted = [o.name for o in request.outputs] if request.outputs else list(OUTPUT_NAMES)
    return {
        "model_name": model_name,
        "model_version": version,
        "id": request.id,
        "outputs": [outputs[name] for name in wanted],
    }


def check_outputs(request: InferenceRequest) -> None:
    for output in request.outputs or []:
        if output.name not in OUTPUT_NAMES:
            raise V2Error(f"unknown output '{output.name}'; available: {', '.join(OUTPUT_NAMES)}")
