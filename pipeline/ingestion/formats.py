"""Catalogue file formats: the project's sample schema, a Shopify or WooCommerce product CSV export, a Google Merchant
Center feed (TSV, CSV or XML), or any table with its columns renamed by ``--map``. Each is read into rows of the sample
schema, which ``catalog_reader`` validates.

Every row dict has ``id``, ``image_paths`` (a list, the main photo first, no duplicates) and, where the file has them,
``name``, ``brand``, ``category``, ``color``, ``price`` (a number, or the string as written when it is not one),
``currency``, ``description`` (plain text), ``SKU`` (the first), ``skus`` (every SKU, variants included), ``tags``,
``url``, ``gender``, ``availability``, ``sale_price`` and ``regular_price``. A sample-schema row keeps its other columns
as they are; ``image_path`` becomes the first of ``image_paths``. An unreadable record is ``(line, "reason")``.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from xml.etree.ElementTree import ParseError

import defusedxml.ElementTree as SafeET
from defusedxml import DefusedXmlException

from ..errors import CatalogError

FORMATS = ("sample", "shopify", "woocommerce", "merchant")
LABELS = {
    "sample": "the sample schema",
    "shopify": "a Shopify product export",
    "woocommerce": "a WooCommerce product export",
    "merchant": "a Google Merchant Center feed",
}
MAP_EXAMPLE = '--map "Product Name=name,Picture=image_path"'
GOOGLE_NS = "http://base.google.com/ns/1.0"
ATOM_NS = "http://www.w3.org/2005/Atom"

Rows = list[tuple[int, "dict | str"]]


@dataclass
class FormatRead:
    format: str  # one of FORMATS, or "mapped" when a --map was given
    sentence: str  # "Read products.csv as a Shopify product export (42 rows, 12 products)."
    columns: list[str] = field(default_factory=list)  # the file's own column names (or XML element names)
    rows: Rows = field(default_factory=list)  # (line of the product's first row, row in the sample schema or a reason)


@dataclass
class FileColumns:
    """What a file would be read as without ``--map`` (one of ``FORMATS``) and its own column names."""

    format: str
    columns: list[str]

    @property
    def mappable(self) -> bool:
        """Only a table or JSON in the sample schema is read through a column mapping; an export or feed has its own
        reader."""
        return self.format == "sample"

    @property
    def label(self) -> str:
        return LABELS[self.format]


# --- small helpers -----------------------------------------------------------------------------------------------


class _Text(HTMLParser):
    BREAKS = frozenset(
        ("p", "br", "div", "li", "ul", "ol", "tr", "td", "th", "h1", "h2", "h3", "h4", "h5", "h6", "table", "section")
    )

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.hidden = 0

    def handle_starttag(self, tag, attrs):
        if tag in ("script", "style"):
            self.hidden += 1
        elif tag in self.BREAKS:
            self.parts.append(" ")

    def handle_endtag(self, tag):
        if tag in ("script", "style"):
            self.hidden = max(0, self.hidden - 1)
        elif tag in self.BREAKS:
            self.parts.append(" ")

    def handle_data(self, data):
        if not self.hidden:
            self.parts.append(data)


def html_to_text(value: object) -> str | None:
    """Plain text of an HTML fragment: tags removed, entities decoded, whitespace collapsed; None when empty."""
    if value is None:
        return None
    parser = _Text()
    parser.feed(str(value))
    parser.close()
    text = " ".join("".join(parser.parts).split())
    return text or None


THOUSANDS = re.compile(r"\d{1,3}(,\d{3})+(\.\d+)?")  # as catalog_reader._price reads them


def _number(value: object) -> float | None:
    """The price as a number when it reads as one (the rules of ``catalog_reader._price``), else None."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        number = float(value)
    else:
        text = str(value).strip().strip("$€£").strip()
        if "," in text:
            if not THOUSANDS.fullmatch(text):
                return None
            text = text.replace(",", "")
        try:
            number = float(text)
        except ValueError:
            return None
    return number if math.isfinite(number) and number >= 0 else None


def _leaf(path: object) -> str | None:
    """The last step of a category path: "Apparel & Accessories > Clothing > Shirts" -> "Shirts"."""
    if not path:
        return None
    steps = [s.strip() for s in str(path).split(">") if s.strip()]
    return steps[-1] if steps else None


def _split(value: object, sep: str = ",") -> list[str]:
    if value is None:
        return []
    if isinstance(value, list):
        return [s for v in value for s in _split(v, sep)]
    return [s.strip() for s in str(value).split(sep) if s.strip()]


def _unique(values) -> list[str]:
    seen: dict[str, None] = {}
    for v in values:
        if v is not None and str(v).strip():
            seen.setdefault(str(v).strip(), None)
    return list(seen)


def _first(*values):
    for v in values:
        if v not in (None, "") and not (isinstance(v, list) and not v):
            return v
    return None


def _put(row: dict, **values) -> dict:
    """``row`` with the values that are there (not None, not an empty list)."""
    for key, value in values.items():
        if value is not None and value != []:
            row[key] = value
    return row


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}{'s' if n != 1 else ''}"


class _Table:
    """Records of a table (CSV, TSV or the items of an XML feed) looked up by column names written loosely: case,
    surrounding spaces and a ``g:`` prefix do not matter."""

    def __init__(self, columns: list[str]) -> None:
        self.columns = columns
        self.names: dict[str, list[str]] = {}
        for c in columns:
            if c:
                self.names.setdefault(_norm(c), []).append(c)

    def has(self, *names: str) -> bool:
        return any(_norm(n) in self.names for n in names)

    def get(self, record: dict, *names: str):
        for n in names:
            for column in self.names.get(_norm(n), ()):
                value = record.get(column)
                if isinstance(value, str):
                    value = value.strip() or None
                if value not in (None, []):
                    return value
        return None


def _norm(name: str) -> str:
    name = name.strip().lower()
    return name[2:] if name.startswith("g:") else name


# --- detection ---------------------------------------------------------------------------------------------------

SHOPIFY_MARKS = ("body (html)", "variant sku", "variant price", "image src", "option1 name", "variant compare at price")
WOO_MARKS = ("regular price", "sale price", "short description", "parent", "in stock?", "tax status", "images")


def detect_format(columns: list[str]) -> str:
    """Which of ``FORMATS`` a table is, from its column names only."""
    names = {_norm(c) for c in columns if c}
    raw = {c.strip().lower() for c in columns if c}
    if "handle" in names and names & set(SHOPIFY_MARKS):
        return "shopify"
    if names & {"name", "sku", "id"} and len(names & set(WOO_MARKS)) >= 2:
        return "woocommerce"
    google = any(c.startswith("g:") for c in raw)
    if "id" in names and ("image_link" in names or {"title", "link"} <= names or (google and "title" in names)):
        return "merchant"
    return "sample"


# --- the entry point ---------------------------------------------------------------------------------------------


def read_rows(
    path: Path,
    text: str,
    fmt: str = "auto",
    mapping: dict[str, str] | None = None,
    shop_url: str | None = None,
) -> FormatRead:
    """The records of the file ``path`` (its decoded ``text``) as rows of the sample schema. ``fmt``: "auto" (from the
    header) or one of ``FORMATS``; ``mapping``: source column -> sample-schema name (format "mapped"); ``shop_url``:
    the shop's address, for the product links of a Shopify export. Raises ``CatalogError`` for an unusable file."""
    path = Path(path)
    if fmt not in ("auto", *FORMATS):
        raise CatalogError(f"Unknown catalogue format {fmt!r}: choose one of auto, {', '.join(FORMATS)}.")
    if mapping and fmt not in ("auto", "sample"):
        raise CatalogError(
            f"--map and --format {fmt} do not go together: --map reads {path.name} as the sample schema with its "
            "columns renamed; leave one of them out."
        )
    suffix = path.suffix.lower()
    stripped = text.lstrip()
    if suffix == ".xml" or (suffix not in (".csv", ".tsv") and stripped.startswith("<")):
        columns, records = _xml_records(path, text)
        kind = "xml"
    elif suffix in (".csv", ".tsv") or (suffix in (".txt", "") and _is_table(text)):
        columns, records, kind = _header(path, text), None, "table"
    else:  # .json, .jsonl, .ndjson, or JSON Lines without a suffix
        columns, records, kind = [], None, "json"

    if kind == "json":
        if fmt not in ("auto", "sample"):
            raise CatalogError(
                f"{path.name} is JSON, which is read in the sample schema only; a {LABELS[fmt][2:]} is a CSV file"
                + (" (or an XML or TSV feed)." if fmt == "merchant" else ".")
            )
        written = list(_json_rows(path, text, as_written=True))
        columns = _unique(k for _, r in written if isinstance(r, dict) for k in r)
        chosen = "mapped" if mapping else "sample"
        shape = (lambda r: _mapped(r, columns, mapping)) if mapping else _sample_row
        rows = [(line, shape(r) if isinstance(r, dict) else r) for line, r in written]
    else:
        chosen = "mapped" if mapping else (detect_format(columns) if fmt == "auto" else fmt)
        if kind == "xml" and chosen == "sample":
            if fmt == "sample":
                raise CatalogError(f"{path.name} is XML: only a Google Merchant Center feed is read as XML.")
            chosen = "merchant"  # an XML product feed is a Merchant feed; its own check names what is missing
        if records is None:
            records = list(_table_records(text, _delimiter(suffix, text), sample=chosen in ("sample", "mapped")))
        rows = _convert(path, chosen, _Table(columns), records, mapping, shop_url)

    _check_columns(path, chosen, columns, mapping)
    return FormatRead(chosen, _sentence(path, chosen, fmt, len(records or rows), rows, mapping), columns, rows)


def columns_of(path: Path, text: str) -> FileColumns:
    """The format ``read_rows`` would choose for the file without ``--map`` and its column names (JSON: the keys its
    rows use, in order of appearance)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".xml" or (suffix not in (".csv", ".tsv") and text.lstrip().startswith("<")):
        columns, _ = _xml_records(path, text)
        return FileColumns("merchant", columns)
    if suffix in (".csv", ".tsv") or (suffix in (".txt", "") and _is_table(text)):
        columns = [c for c in _header(path, text) if c]
        return FileColumns(detect_format(columns), columns)
    rows = _json_rows(path, text, as_written=True)
    return FileColumns("sample", _unique(k for _, r in rows if isinstance(r, dict) for k in r))


def _sentence(path: Path, chosen: str, fmt: str, records: int, rows: Rows, mapping) -> str:
    counts = _plural(records, "row")
    if len(rows) != records:
        counts += f", {_plural(len(rows), 'product')}"
    if chosen == "mapped":
        renames = ", ".join(f"{s} → {t}" for s, t in mapping.items())
        return f"Read {path.name} with its columns renamed by --map ({renames}; {counts})."
    how = f"--format {fmt}; " if fmt != "auto" else ""
    return f"Read {path.name} as {LABELS[chosen]} ({how}{counts})."


def _check_columns(path: Path, chosen: str, columns: list[str], mapping: dict[str, str] | None) -> None:
    """A table none of whose columns is an id or a name gives no product at all: one sentence for the whole file,
    listing its columns, rather than a "missing id" for every row."""
    if not columns:
        return
    if mapping:
        missing = [s for s in mapping if s not in columns and _loose(s, columns) is None]
        if missing:
            raise CatalogError(
                f"--map names the column{'s' if len(missing) > 1 else ''} {', '.join(missing)}, which {path.name} "
                f"does not have: its columns are {', '.join(columns)}."
            )
    if chosen not in ("sample", "mapped"):
        return
    renamed = {(_loose(s, columns) or s): t for s, t in (mapping or {}).items()}
    names = {renamed.get(c, c) for c in columns}
    if "id" in names or names & {"name", "text"}:
        return
    raise CatalogError(
        f"{path.name} has the columns {', '.join(columns)}, none of which is an id or a name: a product needs a column "
        f'"id" or "name" (or "text"), and the file is not a Shopify, WooCommerce or Google Merchant export; pass '
        f"--map to say which of its columns are which (e.g. {MAP_EXAMPLE})."
    )


def _loose(name: str, columns: list[str]) -> str | None:
    """The column ``name`` stands for: itself, else the one equal to it but for case and spaces."""
    if name in columns:
        return name
    for c in columns:
        if c.strip().lower() == name.strip().lower():
            return c
    return None


def parse_mapping(spec: str) -> dict[str, str]:
    """``"Product Name=name,Picture=image_path"`` -> ``{"Product Name": "name", "Picture": "image_path"}``."""
    mapping: dict[str, str] = {}
    parts = [p for p in (spec or "").split(",") if p.strip()]
    if not parts:
        raise CatalogError(f"--map needs at least one SOURCE=TARGET pair (e.g. {MAP_EXAMPLE}).")
    for part in parts:
        source, eq, target = part.partition("=")
        source, target = source.strip(), target.strip()
        if not eq or not source or not target:
            raise CatalogError(
                f"--map {spec!r}: {part.strip()!r} is not SOURCE=TARGET (a column of the file, an equals sign and a "
                f"field of the sample schema, e.g. {MAP_EXAMPLE})."
            )
        if source in mapping:
            raise CatalogError(f"--map {spec!r} names the column {source} twice.")
        if target in mapping.values():
            raise CatalogError(f"--map {spec!r} maps two columns onto {target}: keep one.")
        mapping[source] = target
    return mapping


# --- reading the file --------------------------------------------------------------------------------------------


def _is_table(text: str) -> bool:
    """Whether a .txt or a file without suffix is a table (a Merchant feed is often a tab-separated .txt) rather than
    JSON or JSON Lines, the sample schema's forms without a suffix."""
    first = next((line for line in text.splitlines() if line.strip()), "")
    return bool(first.strip()) and not first.lstrip().startswith(("{", "["))


def _delimiter(suffix: str, text: str) -> str:
    header = text.split("\n", 1)[0]
    return "\t" if suffix == ".tsv" or ("\t" in header and "," not in header) else ","


def _header(path: Path, text: str) -> list[str]:
    try:
        header = next(csv.reader(io.StringIO(text, newline=""), delimiter=_delimiter(path.suffix.lower(), text)), [])
    except csv.Error as err:
        raise CatalogError(f"{path.name} is not a readable CSV file ({err}).") from None
    return [c.strip() if c else c for c in header if c is not None]


def _table_records(text: str, delimiter: str, sample: bool):
    """(line, record) for every row of a CSV or TSV table, empty cells None. The sample schema keeps its line numbers
    (the row's last line); the exports give the row's first line (a Shopify body spans several)."""
    source = text.splitlines() if sample else io.StringIO(text, newline="")
    reader = csv.DictReader(source, delimiter=delimiter)
    if reader.fieldnames:
        reader.fieldnames = [c.strip() if c else c for c in reader.fieldnames]
    before = 1
    try:
        for row in reader:
            line = reader.line_num if sample else before + 1
            before = reader.line_num
            yield line, {k: (v if v != "" else None) for k, v in row.items() if k is not None}
    except csv.Error as err:
        raise CatalogError(f"The table is not readable after line {reader.line_num} ({err}).") from None


def _json_rows(path: Path, text: str, as_written: bool = False):
    """The sample schema as JSON (an array, or ``{"products": [...]}``) or JSON Lines (a bad line is one bad row);
    ``as_written``: the objects with their own keys, not yet in the sample schema's shape."""
    shape = (lambda row: row) if as_written else _sample_row
    if path.suffix.lower() == ".json" or text.lstrip().startswith("["):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise CatalogError(f"{path.name} is not valid JSON (line {err.lineno}: {err.msg}).") from err
        if isinstance(data, dict):
            data = data.get("products", [data])
        if not isinstance(data, list):
            raise CatalogError(f"{path.name} must hold a JSON array of products.")
        # Line numbers of a pretty-printed array: point at each object's opening brace.
        starts = _object_lines(text, len(data))
        for i, row in enumerate(data):
            yield starts[i] if i < len(starts) else i + 1, shape(row)
        return
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            yield number, shape(json.loads(line))
        except json.JSONDecodeError as err:
            yield number, f"not valid JSON ({err.msg})"


def _object_lines(text: str, count: int) -> list[int]:
    lines, depth, line = [], 0, 1
    in_string = escaped = False
    for ch in text:
        if ch == "\n":
            line += 1
        if in_string:
            escaped = (ch == "\\") and not escaped
            if ch == '"' and not escaped:
                in_string = False
            continue
        if ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if ch == "{" and depth == 2:
                lines.append(line)
        elif ch in "]}":
            depth -= 1
    return lines[:count]


def _xml_records(path: Path, text: str) -> tuple[list[str], list[tuple[int, dict]]]:
    """The items of an RSS 2.0 or Atom product feed: element name (``g:`` for Google's namespace) -> text, a list
    where an element repeats. A DTD (and so any entity, external or expanding) is refused before anything is read."""
    try:
        root = SafeET.fromstring(text, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except DefusedXmlException:
        raise CatalogError(
            f"{path.name} declares a DTD or entities, which a product feed has no need of and which can expand "
            "without end or read other files: nothing was read. Export the feed again without a DOCTYPE."
        ) from None
    except ParseError as err:
        raise CatalogError(f"{path.name} is not well-formed XML ({err}).") from None
    items = [e for e in root.iter() if _local(e.tag) in ("item", "entry")]
    if not items:
        raise CatalogError(f"{path.name} is XML but holds no <item> (RSS) or <entry> (Atom) products.")
    starts = [text.count("\n", 0, m.start()) + 1 for m in re.finditer(r"<(?:[\w.-]+:)?(?:item|entry)[\s>/]", text)]
    columns: dict[str, None] = {}
    records = []
    for i, item in enumerate(items):
        record: dict = {}
        plain: dict = {}
        for child in item:
            local = _local(child.tag)
            google = child.tag.startswith("{" + GOOGLE_NS + "}")
            if len(child):
                continue  # a structured element (g:shipping, author): no field of a product row
            value = (child.text or "").strip()
            if local == "link" and not google and child.get("href"):
                if child.get("rel", "alternate") != "alternate":
                    continue
                value = child.get("href").strip()
            if not value:
                continue
            name = f"g:{local}" if google else local
            columns.setdefault(name, None)
            target = record if google else plain
            if name in target:
                target[name] = [*(target[name] if isinstance(target[name], list) else [target[name]]), value]
            else:
                target[name] = value
        for name, value in plain.items():  # a g: element wins over the plain one (Atom's own <id> is no offer id)
            if f"g:{name}" not in record:
                record[name] = value
        records.append((starts[i] if i < len(starts) and len(starts) == len(items) else i + 1, record))
    return list(columns), records


def _local(tag: object) -> str:
    return tag.rsplit("}", 1)[-1] if isinstance(tag, str) else ""


# --- the formats -------------------------------------------------------------------------------------------------


def _convert(path, chosen, table, records, mapping, shop_url) -> Rows:
    if chosen == "shopify":
        _require(path, table, chosen, "Handle")
        return _shopify(table, records, shop_url)
    if chosen == "woocommerce":
        _require(path, table, chosen, "ID", "SKU")
        return _woocommerce(table, records)
    if chosen == "merchant":
        _require(path, table, chosen, "id")
        return _merchant(table, records)
    if chosen == "mapped":
        return [(line, _mapped(record, table.columns, mapping)) for line, record in records]
    return [(line, _sample_row(record)) for line, record in records]


def _require(path: Path, table: _Table, chosen: str, *names: str) -> None:
    if not table.has(*names):
        which = " or ".join(names)
        raise CatalogError(
            f"{path.name} has no {which} column, which {LABELS[chosen]} has: its columns are "
            f"{', '.join(table.columns) or 'none'}. Pass --format auto, or --map to say which of its columns are which "
            f"(e.g. {MAP_EXAMPLE})."
        )


def _sample_row(row: object) -> object:
    """A row of the sample schema as it is, its photos in ``image_paths`` (``image_path`` first, then the row's own
    ``image_paths`` and ``additional_image_paths``)."""
    if not isinstance(row, dict):
        return row
    row = dict(row)
    main = row.pop("image_path", None)
    given = row.pop("image_paths", None)
    more = row.pop("additional_image_paths", None)
    photos = []
    for value in (main, given, more):
        if isinstance(value, list):
            photos += [v for v in value if isinstance(v, (str, int, float)) and not isinstance(v, bool)]
        elif isinstance(value, (str, int, float)) and not isinstance(value, bool):
            photos.append(value)
    row["image_paths"] = _unique(photos)
    return row


def _mapped(record: dict, columns: list[str], mapping: dict[str, str]) -> dict:
    row = dict(record)
    for source, target in mapping.items():
        column = _loose(source, columns)
        value = row.pop(column, None)
        if target in ("image_path", "image_paths", "additional_image_paths"):
            value = _split(value) if isinstance(value, str) else value
        row[target] = value
    return _sample_row(row)


def _shopify(table: _Table, records, shop_url: str | None) -> Rows:
    get = table.get
    groups: dict[str, list[tuple[int, dict]]] = {}
    out: Rows = []
    for line, record in records:
        handle = get(record, "Handle")
        if handle is None:
            out.append((line, "no Handle: every row of a Shopify export names its product there"))
            continue
        groups.setdefault(str(handle), []).append((line, record))
    for handle, rows in groups.items():
        line = rows[0][0]

        def field_of(*names, rows=rows):
            return _first(*(get(r, *names) for _, r in rows))

        color = None
        for n in (1, 2, 3):
            option = field_of(f"Option{n} Name")
            if option and str(option).strip().lower() in ("color", "colour"):
                color = field_of(f"Option{n} Value")
                break
        prices = []  # (number or None, raw, compare-at) of every variant
        for _, r in rows:
            raw = get(r, "Variant Price")
            if raw is not None:
                prices.append((_number(raw), raw, get(r, "Variant Compare At Price")))
        price = sale = regular = None
        numbers = [p for p in prices if p[0] is not None]
        if numbers:
            best = min(numbers, key=lambda p: p[0])
            price = best[0]
            compare = _number(best[2])
            if compare is not None and compare > price:
                sale, regular = price, compare
        elif prices:
            price = prices[0][1]  # as written: validation says what is wrong with it
        positioned = []
        for i, (_, r) in enumerate(rows):
            src = get(r, "Image Src")
            if src:
                position = _number(get(r, "Image Position"))
                positioned.append((position if position is not None else math.inf, i, src))
        photos = [src for _, _, src in sorted(positioned)] + [get(r, "Variant Image") for _, r in rows]
        skus = _unique(get(r, "Variant SKU") for _, r in rows)
        row = {"id": handle}
        _put(
            row,
            name=field_of("Title"),
            brand=field_of("Vendor"),
            category=_first(field_of("Type"), _leaf(field_of("Product Category"))),
            color=color,
            price=price,
            sale_price=sale,
            regular_price=regular,
            description=html_to_text(field_of("Body (HTML)")),
            SKU=skus[0] if skus else None,
            skus=skus,
            tags=_split(field_of("Tags")),
            url=f"{shop_url.rstrip('/')}/products/{handle}" if shop_url else None,
            gender=field_of("Google Shopping / Gender"),
        )
        row["image_paths"] = _unique(photos)
        out.append((line, row))
    return sorted(out, key=lambda r: r[0])


def _woo_attribute(table: _Table, record: dict, *wanted: str):
    for n in range(1, 10):
        name = table.get(record, f"Attribute {n} name")
        if name is None:
            if not table.has(f"Attribute {n} name"):
                break
            continue
        if str(name).strip().lower() in wanted:
            values = _split(table.get(record, f"Attribute {n} value(s)", f"Attribute {n} value"))
            return values[0] if values else None
    return None


def _woo_price(table: _Table, record: dict):
    sale, regular = table.get(record, "Sale price"), table.get(record, "Regular price")
    given = sale if sale is not None else regular
    return (_number(given), given, sale, regular)


def _woocommerce(table: _Table, records) -> Rows:
    get = table.get
    parents: list[tuple[int, dict, list[dict]]] = []
    by_key: dict[str, int] = {}
    variations = []
    for line, record in records:
        if str(get(record, "Type") or "").strip().lower() == "variation":
            variations.append((line, record))
            continue
        index = len(parents)
        parents.append((line, record, []))
        if get(record, "ID") is not None:
            by_key.setdefault(f"id:{get(record, 'ID')}", index)
        if get(record, "SKU") is not None:
            by_key.setdefault(str(get(record, "SKU")), index)
    out: Rows = []
    for line, record in variations:
        parent = str(get(record, "Parent") or "").strip()
        index = by_key.get(parent, by_key.get(f"id:{parent}"))
        if index is None:
            out.append((line, f"a variation of {parent or 'no parent'}, which is not in the file"))
        else:
            parents[index][2].append(record)
    for line, record, kids in parents:
        every = [record, *kids]
        prices = [_woo_price(table, r) for r in every]
        numbers = [p for p in prices if p[0] is not None]
        price = sale = regular = None
        if numbers:
            best = min(numbers, key=lambda p: p[0])
            price, sale, regular = best[0], best[2], best[3]
        else:
            given = next((p for p in prices if p[1] is not None), None)
            if given:
                price, sale, regular = given[1], given[2], given[3]
        categories = [c.replace("\\,", ",") for c in re.split(r"(?<!\\),", str(get(record, "Categories") or ""))]
        brands = _split(get(record, "Brands", "Brand"))
        stock = get(record, "In stock?")
        availability = {"1": "in stock", "0": "out of stock"}.get(str(stock).strip(), stock) if stock else None
        skus = _unique(get(r, "SKU") for r in every)
        row = {"id": _first(get(record, "ID"), get(record, "SKU"))}
        if row["id"] is not None:
            row["id"] = str(row["id"])
        _put(
            row,
            name=get(record, "Name"),
            brand=brands[0] if brands else _woo_attribute(table, record, "brand", "brands"),
            category=_leaf(next((c for c in categories if c.strip()), None)),
            color=_first(*(_woo_attribute(table, r, "color", "colour") for r in every)),
            price=price,
            sale_price=sale,
            regular_price=regular,
            description=_first(
                html_to_text(get(record, "Description")), html_to_text(get(record, "Short description"))
            ),
            SKU=skus[0] if skus else None,
            skus=skus,
            tags=_split(get(record, "Tags")),
            url=get(record, "Permalink", "URL"),
            availability=availability,
        )
        row["image_paths"] = _unique(p for r in every for p in _split(get(r, "Images")))
        out.append((line, row))
    return sorted(out, key=lambda r: r[0])


MONEY = re.compile(r"^\s*(?:([A-Za-z]{3})\s+)?([0-9][0-9.,]*)\s*(?:([A-Za-z]{3}))?\s*$")


def _money(value: object) -> tuple[object, str | None]:
    """ "15.00 USD" -> (15.0, "USD"); what does not read as an amount is kept as written (validation says why)."""
    if value is None:
        return None, None
    match = MONEY.match(str(value))
    if match:
        number = _number(match.group(2))
        if number is not None:
            currency = match.group(1) or match.group(3)
            return number, currency.upper() if currency else None
    return _number(value) if _number(value) is not None else value, None


def _merchant(table: _Table, records) -> Rows:
    get = table.get
    items = []
    for line, record in records:
        price, currency = _money(get(record, "price"))
        sale, sale_currency = _money(get(record, "sale_price"))
        row = {"id": get(record, "id")}
        regular = None
        if sale is not None:
            price, regular, currency = sale, price, sale_currency or currency
        product_type = _split(get(record, "product_type"))
        google = get(record, "google_product_category")
        google = None if google is None or str(google).strip().isdigit() else google  # a bare taxonomy number
        category = _leaf(product_type[0]) if product_type else _leaf(google)
        if row["id"] is not None:
            row["id"] = str(row["id"])
        _put(
            row,
            name=get(record, "title"),
            brand=get(record, "brand"),
            category=category,
            color=get(record, "color"),
            price=price,
            currency=currency,
            sale_price=sale,
            regular_price=regular,
            description=html_to_text(get(record, "description")),
            SKU=row["id"],
            skus=[row["id"]] if row["id"] else None,
            url=get(record, "link"),
            gender=get(record, "gender"),
            availability=get(record, "availability"),
        )
        row["image_paths"] = _unique(
            [*_split(get(record, "image_link")), *_split(get(record, "additional_image_link"))]
        )
        items.append((line, get(record, "item_group_id"), row))
    out: Rows = []
    groups: dict[str, list[tuple[int, dict]]] = {}
    for line, group, row in items:
        if group is None:
            out.append((line, row))
        else:
            groups.setdefault(str(group), []).append((line, row))
    for group, members in groups.items():
        line, first = members[0]
        rows = [r for _, r in members]
        numbers = [r for r in rows if isinstance(r.get("price"), float)]
        cheapest = min(numbers, key=lambda r: r["price"]) if numbers else first
        merged = {"id": group}
        for key in ("name", "brand", "category", "color", "description", "url", "gender", "availability"):
            _put(merged, **{key: _first(*(r.get(key) for r in rows))})
        _put(merged, **{k: cheapest.get(k) for k in ("price", "currency", "sale_price", "regular_price")})
        skus = _unique(r.get("id") for r in rows)
        _put(merged, SKU=skus[0] if skus else None, skus=skus)
        merged["image_paths"] = _unique(p for r in rows for p in r["image_paths"])
        out.append((line, merged))
    return sorted(out, key=lambda r: r[0])
