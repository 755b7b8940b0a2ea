"""The Open Inference Protocol (KServe V2) for the same model, so standard V2 clients can call it.

Inputs are one tensor per record column, as MLServer's pandas codec sends them: ``description``
(required), ``contract``, ``department`` and ``id`` as ``BYTES`` (JSON strings), ``cost`` as any
numeric type; each of shape ``[n]`` or ``[n, 1]``. Outputs: ``category`` (BYTES ``[n]``),
``confidence`` (FP64 ``[n]``), ``needs_review`` (BOOL ``[n]``), ``top_categories`` (BYTES ``[n, k]``),
``top_probabilities`` (FP64 ``[n, k]``) and ``model_version`` (BYTES ``[n]``: the version that
answered each record, which differs between records only in canary mode). Errors are
``{"error": "..."}`` with a 4xx status, as the protocol specifies.

This module is the codec only (wire format to :class:`~ml.serve.inference.Columns` and back); the
limits and the model call are :mod:`ml.serve.dataplane`'s, the routes :mod:`ml.serve.api_v2`'s.

The binary tensor data extension is supported as Triton and its clients (``tritonclient``) use it by
default: a request whose ``Inference-Header-Content-Length`` header gives the size of its JSON part
carries the data of each input with a ``binary_data_size`` parameter after the JSON, in input order
(``BYTES`` as 4-byte little-endian lengths each followed by the UTF-8 bytes; numbers little-endian).
Outputs requested with ``"binary_data": true`` (or all, with the request parameter
``binary_data_output``) come back the same way.
"""

from __future__ import annotations

import json
import struct
import sys
from collections.abc import Callable
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ml.serve.dataplane import ServeError
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
OUTPUT_NAMES = ("category", "confidence", "needs_review", "top_categories", "top_probabilities", "model_version")
#: The binary data extension's header: the size of the JSON part of a body.
HEADER_LENGTH = "inference-header-content-length"
#: Integers beyond this have no float (an OverflowError later).
_LARGEST_INT = int(sys.float_info.max)
#: Little-endian numpy types of the fixed-size V2 datatypes.
_BINARY_TYPES = {
    "BOOL": "?",
    "UINT8": "u1",
    "UINT16": "<u2",
    "UINT32": "<u4",
    "UINT64": "<u8",
    "INT8": "i1",
    "INT16": "<i2",
    "INT32": "<i4",
    "INT64": "<i8",
    "FP16": "<f2",
    "FP32": "<f4",
    "FP64": "<f8",
}


class V2Error(ServeError):
    """A request that does not follow the protocol: 400 ``{"error": message}``."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message, status)


class RequestInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    shape: list[int] = Field(min_length=1, max_length=2)
    datatype: Datatype
    parameters: dict[str, Any] | None = None
    #: Absent when the data follows the JSON in binary (``parameters.binary_data_size``).
    data: list[Any] | None = None


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


def parse(body: bytes, header_length: str | None) -> InferenceRequest:
    """The request from a JSON body, or a JSON part followed by binary tensor data."""
    if header_length is None:
        json_part, binary = body, b""
    else:
        try:
            size = int(header_length)
        except ValueError:
            size = -1
        if not 0 <= size <= len(body):
            raise V2Error(f"Inference-Header-Content-Length {header_length!r} is not a size within the body")
        json_part, binary = body[:size], body[size:]
    try:
        request = InferenceRequest.model_validate_json(json_part)
    except ValidationError as exc:
        summary = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise V2Error(f"invalid inference request: {summary}") from None
    offset = 0
    for tensor in request.inputs:
        blob_size = (tensor.parameters or {}).get("binary_data_size")
        if blob_size is None:
            if tensor.data is None:
                raise V2Error(f"input '{tensor.name}' has neither data nor a binary_data_size")
            continue
        if tensor.data is not None:
            raise V2Error(f"input '{tensor.name}' has both data and a binary_data_size")
        if not isinstance(blob_size, int) or blob_size < 0 or offset + blob_size > len(binary):
            raise V2Error(
                f"input '{tensor.name}': binary_data_size {blob_size!r} runs past the {len(binary)} binary bytes"
            )
        tensor.data = _from_binary(tensor, binary[offset : offset + blob_size])
        offset += blob_size
    if offset != len(binary):
        raise V2Error(f"{len(binary) - offset} binary bytes after the JSON belong to no input")
    return request


def _from_binary(tensor: RequestInput, data: bytes) -> list[Any]:
    if tensor.datatype != "BYTES":
        dtype = np.dtype(_BINARY_TYPES[tensor.datatype])
        if len(data) % dtype.itemsize:
            raise V2Error(f"input '{tensor.name}': {len(data)} bytes is not a whole number of {tensor.datatype}")
        return list(np.frombuffer(data, dtype=dtype).tolist())
    values: list[Any] = []
    offset = 0
    while offset < len(data):
        if offset + 4 > len(data):
            raise V2Error(f"input '{tensor.name}': BYTES element {len(values)} has a truncated length")
        (length,) = struct.unpack_from("<I", data, offset)
        offset += 4
        if offset + length > len(data):
            raise V2Error(f"input '{tensor.name}': BYTES element {len(values)} runs past its data")
        try:
            values.append(data[offset : offset + length].decode())
        except UnicodeDecodeError as exc:
            raise V2Error(f"input '{tensor.name}'[{len(values)}]: not UTF-8 text ({exc.reason})") from None
        offset += length
    return values


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
            TensorMetadata(name="model_version", datatype="BYTES", shape=[-1]),
        ],
    )


def decode(request: InferenceRequest, check_count: Callable[[int], None]) -> tuple[Columns, list[str] | None]:
    """Check the tensors and turn them into record columns and the record ids (the ``id`` input,
    None without one); V2Error names what is wrong. ``check_count`` refuses too many records
    before any tensor is flattened; the values' limits are the data plane's."""
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
        check_count(n)
        data = _flatten(tensor.data or [], name)
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
                if value is None or (isinstance(value, float) and value != value):
                    continue  # a missing cost: null in JSON, NaN in binary data (as pandas codecs send it)
                if isinstance(value, bool) or not isinstance(value, int | float):
                    raise V2Error(f"input 'cost'[{i}]: expected a number, got {type(value).__name__}")
                if isinstance(value, int) and abs(value) > _LARGEST_INT:
                    raise V2Error(f"input 'cost'[{i}]: {value} is beyond the range of a float")
        tensors[name] = data
    if "description" not in tensors:
        raise V2Error("input 'description' (BYTES) is required")
    if not rows:
        raise V2Error("at least one record is required")
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
    return columns, tensors.get("id")


def encode(request: InferenceRequest, result: Result, model_name: str, version: str) -> tuple[bytes, int | None]:
    """The response body and, when some outputs are binary, the size of its JSON part."""
    n = len(result.category)
    k = len(result.top_categories[0]) if n else 0
    outputs: dict[str, dict[str, Any]] = {
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
        "model_version": {"name": "model_version", "datatype": "BYTES", "shape": [n], "data": result.model_version},
    }
    all_binary = _flag(request.parameters, "binary_data_output", False, "the request")
    wanted = [
        (o.name, _flag(o.parameters, "binary_data", all_binary, f"output '{o.name}'")) for o in request.outputs or []
    ] or [(name, all_binary) for name in OUTPUT_NAMES]
    chosen, blobs = [], []
    for name, binary in wanted:
        output = outputs[name]
        if binary:
            blob = _to_binary(output["datatype"], output.pop("data"))
            output["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        chosen.append(output)
    header = json.dumps(
        {"model_name": model_name, "model_version": version, "id": request.id, "outputs": chosen},
        separators=(",", ":"),
    ).encode()
    if not blobs:
        return header, None
    return b"".join([header, *blobs]), len(header)


def _to_binary(datatype: str, data: list[Any]) -> bytes:
    if datatype != "BYTES":
        return np.asarray(data, dtype=_BINARY_TYPES[datatype]).tobytes()
    encoded = [str(value).encode() for value in data]
    return b"".join(struct.pack("<I", len(e)) + e for e in encoded)


def _flag(parameters: dict[str, Any] | None, name: str, default: bool, owner: str) -> bool:
    """A boolean parameter: JSON true or false only (the string "false" is not taken as true)."""
    value = (parameters or {}).get(name, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise V2Error(f"parameter '{name}' of {owner} must be true or false, not {json.dumps(value)[:40]}")
    return value


def check_outputs(request: InferenceRequest) -> None:
    """The requested outputs exist, are named once, and their parameters parse."""
    seen: set[str] = set()
    _flag(request.parameters, "binary_data_output", False, "the request")
    for output in request.outputs or []:
        if output.name not in OUTPUT_NAMES:
            raise V2Error(f"unknown output '{output.name}'; available: {', '.join(OUTPUT_NAMES)}")
        if output.name in seen:
            raise V2Error(f"output '{output.name}' requested twice")
        seen.add(output.name)
        _flag(output.parameters, "binary_data", False, f"output '{output.name}'")
