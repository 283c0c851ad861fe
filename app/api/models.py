"""What the REST API takes and gives, as pydantic models: the OpenAPI schema at ``/api/openapi.json`` is made from
these, so it says exactly what a client may send and what comes back.

Numbers are typed here (an integer is an integer) but their ranges are checked by the pipeline, as for the page, so a
client gets the page's own sentences (``Ask for between 1 and 100 results.``); the ranges are still in the schema.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Level = Literal["match", "similar", "none"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SearchFilters(Strict):
    categories: list[str] = Field(default_factory=list, description="Only these categories (any of them).")
    brands: list[str] = Field(default_factory=list, description="Only these brands (any of them).")
    min_price: float | None = Field(None, json_schema_extra={"minimum": 0}, description="0 or null: no lower limit.")
    max_price: float | None = Field(None, json_schema_extra={"minimum": 0}, description="0 or null: no upper limit.")


class SearchRequest(Strict):
    """A description (``text``) or a photo (``image_url``, ``image_base64``, or the multipart field ``image``)."""

    text: str | None = Field(None, description="A description: its words and meaning (exact SKUs and names first).")
    image_url: str | None = Field(
        None, description="An http(s) photo URL, fetched by the server (public addresses only unless configured)."
    )
    image_base64: str | None = Field(None, description="A photo's bytes in base64 (a data: URL is accepted too).")
    top_k: int | None = Field(
        None, json_schema_extra={"minimum": 1, "maximum": 100}, description="Results (default: APP_TOP_K)."
    )
    filters: SearchFilters = Field(default_factory=SearchFilters)
    diverse: bool = Field(False, description="No near-copies side by side (re-ranked by MMR over the photos).")
    refine: str | None = Field(None, description='With a photo: words that move the search ("in red").')
    refine_weight: float | None = Field(
        None,
        json_schema_extra={"minimum": 0, "maximum": 1},
        description="With refine: 0 the photo alone, 1 the words alone (default: REFINE_WEIGHT).",
    )


class MatchOut(BaseModel):
    id: str
    name: str
    brand: str | None = None
    category: str | None = None
    price: float | None = None
    currency: str | None = None
    score: float
    level: Level
    level_words: str
    url: str | None = Field(None, description="The product's page in the shop (http or https only).")
    image_url: str | None = Field(None, description="Where this server hands out the product's photo (below its root).")
    fields: dict[str, Any] = Field(default_factory=dict, description="Every other field of the product.")


class SearchResponse(BaseModel):
    kind: Literal["text", "image", "similar"]
    matches: list[MatchOut]
    best_level: Level
    best_level_words: str
    cache_hit: bool
    catalog_version: int
    timings_ms: dict[str, float]
    warnings: list[str]


class ProductOut(BaseModel):
    id: str
    name: str
    brand: str | None = None
    category: str | None = None
    price: float | None = None
    currency: str | None = None
    url: str | None = None
    image_url: str | None = None
    fields: dict[str, Any] = Field(default_factory=dict)


class FacetValue(BaseModel):
    value: str
    count: int


class FacetsOut(BaseModel):
    categories: list[FacetValue]
    brands: list[FacetValue]


class LevelThresholds(BaseModel):
    match: float
    similar: float


class ModelOut(BaseModel):
    label: str
    identity: str
    kind: str
    family: str
    thresholds: dict[str, LevelThresholds]  # per query kind ("text", "image"): what the levels use now
    thresholds_calibration: str  # where they were measured for this model; empty: defaults, not calibrated


class CatalogueOut(BaseModel):
    products: int | None
    version: int | None


class HealthOut(BaseModel):
    ready: bool
    model: ModelOut | None
    inference: str
    catalogue: CatalogueOut
    problems: list[str]


class BadRowOut(BaseModel):
    line: int
    id: str | None = None
    reason: str


class ImportReport(BaseModel):
    """The Catalogue tab's report (what ``/ingest`` returns too)."""

    catalog: str
    format: str
    rows: int
    added: int
    updated: int
    unchanged: int
    deleted: int
    bad: list[BadRowOut]
    failed_photos: list[BadRowOut]
    without_photo: int
    photos: int
    downloads: dict[str, Any] = Field(description="Photo URLs: fetched, not modified, failed, bytes, seconds.")
    skipped: list[str] = Field(description="Upload entries that were neither a catalogue nor a photo.")
    duplicates: list[dict[str, Any]] = Field(description="Near-identical photos among the changed products.")
    catalog_version: int
    seconds: float
    optimize_seconds: float


class DeletedOut(BaseModel):
    deleted: list[str]
    catalog_version: int


class ErrorOut(BaseModel):
    """Every error: its HTTP status, a short code and one sentence for people."""

    status: int
    error: str = Field(description="e.g. invalid_input, unauthorized, forbidden, not_found, too_large, rate_limited")
    message: str
