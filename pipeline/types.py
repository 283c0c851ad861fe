"""What a query takes and gives: filters, matches, the answer and its match levels.

No engine, no storage adapter and no numpy here, so that the app, the command line and the library import them freely
(the vector stores translate ``Filters`` into their own conditions).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class Filters:
    categories: tuple[str, ...] = ()
    brands: tuple[str, ...] = ()
    colors: tuple[str, ...] = ()
    min_price: float | None = None
    max_price: float | None = None

    def key(self) -> tuple:
        return (
            tuple(sorted(self.categories)),
            tuple(sorted(self.brands)),
            tuple(sorted(self.colors)),
            self.min_price,
            self.max_price,
        )

    @property
    def keyword_conditions(self) -> list[tuple[str, tuple[str, ...]]]:
        """(payload field, accepted values) for each keyword filter that is set; each engine builds its own types."""
        pairs = (("category", self.categories), ("brand", self.brands), ("color", self.colors))
        return [(name, values) for name, values in pairs if values]

    @property
    def price_range(self) -> tuple[float | None, float | None] | None:
        if self.min_price is None and self.max_price is None:
            return None
        return self.min_price, self.max_price

    def __bool__(self) -> bool:
        return bool(self.keyword_conditions) or self.price_range is not None


LEVEL_WORDS = {"match": "Match", "similar": "Similar product", "none": "No close match"}


@dataclass
class Match:
    id: str
    name: str
    brand: str | None
    category: str | None
    price: float | None
    score: float
    level: str
    image: str | None
    metadata: dict = field(default_factory=dict)
    url: str | None = None  # the product's page in the shop (http or https only: web_link)
    currency: str | None = None

    def to_json(self, with_metadata: bool = False) -> dict:
        data = asdict(self)
        if not with_metadata:
            data.pop("metadata")
        return data


@dataclass
class MatchResult:
    kind: str
    matches: list[Match]
    cache_hit: bool
    timings_ms: dict[str, float]
    catalog_version: int
    warnings: list[str] = field(default_factory=list)

    @property
    def best_level(self) -> str:
        levels = {m.level for m in self.matches}
        return "match" if "match" in levels else "similar" if "similar" in levels else "none"

    def to_json(self, with_metadata: bool = False) -> dict:
        return {
            "kind": self.kind,
            "matches": [m.to_json(with_metadata) for m in self.matches],
            "best_level": self.best_level,
            "cache_hit": self.cache_hit,
            "timings_ms": self.timings_ms,
            "catalog_version": self.catalog_version,
            "warnings": self.warnings,
        }


def web_link(value: object) -> str | None:
    """A product page link that may be shown as a link: an absolute http(s) URL with a host, else None (a
    ``javascript:`` or ``data:`` link from a catalogue must never become clickable)."""
    if not isinstance(value, str):
        return None
    link = value.strip()
    scheme, _, rest = link.partition("://")
    if (
        scheme.lower() not in ("http", "https")
        or not rest
        or rest[0] in "/?#"
        or any(c in link for c in " \t\n\r<>\"'`")
    ):
        return None
    return link


def level_for(score: float, match_t: float, similar_t: float) -> str:
    """Thresholds are short decimals; float32 scores a hair below them (0.99999994 for 1.0) still reach them."""
    score += 1e-6
    return "match" if score >= match_t else "similar" if score >= similar_t else "none"
