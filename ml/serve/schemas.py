"""The ``/v1`` API's request and response bodies (also the published OpenAPI schema).

Validation is strict where a silent coercion would hide a client bug: a cost given as a string, an
empty description, a negative or infinite cost, or an unknown field are 422s naming the field.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

NonBlank = Annotated[str, StringConstraints(strip_whitespace=False, min_length=1, max_length=2000, pattern=r"\S")]
Text = Annotated[str, StringConstraints(max_length=2000)]


class PurchaseRecord(BaseModel):
    """One purchase line to classify."""

    model_config = ConfigDict(extra="forbid")

    id: Annotated[str, StringConstraints(min_length=1, max_length=200)] = Field(
        description="The caller's id, echoed back"
    )
    description: NonBlank = Field(description="Free-text description, e.g. 'SUT SILK 3-0 SA74H'")
    cost: float | None = Field(
        default=None, ge=0, allow_inf_nan=False, strict=True, description="Unit cost; null when unknown"
    )
    contract: Text | None = Field(default=None, description="Contract or supplier text")
    department: Text | None = Field(default=None, description="Requesting department")


class ClassifyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    records: list[PurchaseRecord] = Field(
        min_length=1, description="Records to classify (at most ML_MAX_REQUEST_RECORDS; more is a 413)"
    )


class Alternative(BaseModel):
    category: str
    probability: float


class Classification(BaseModel):
    id: str
    category: str
    confidence: float
    needs_review: bool = Field(description="confidence is below ML_REVIEW_THRESHOLD")
    alternatives: list[Alternative] = Field(description="The top-k categories, best first")
    model_version: str


class ClassifyResponse(BaseModel):
    model_version: str
    results: list[Classification] = Field(description="One per record, in request order")


class ModelInfo(BaseModel):
    """The loaded model's metadata as stored in the registry, plus serving facts."""

    model_config = ConfigDict(extra="allow")

    name: str
    version: str
    sha256: str | None = None
    metrics: dict[str, Any] | None = None
    training_snapshot: str | None = None
    image_digest: str | None = None
    classes: list[str] = []
    candidate_version: str | None = Field(
        default=None, description="The CANDIDATE version loaded beside this one (shadow or canary mode)"
    )
    candidate_mode: str = Field(default="off", description="ML_CANDIDATE_MODE: off, shadow or canary")


class Problem(BaseModel):
    detail: Any
