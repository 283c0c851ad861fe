"""Shop exports read into the sample schema: Shopify and WooCommerce CSV, Google Merchant TSV, CSV and XML, renamed
columns (--map); hostile XML is refused before anything is read. Every file is written here."""

from __future__ import annotations

import csv
import io
import json

import pytest

from pipeline.errors import CatalogError
from pipeline.ingestion.catalog_reader import read_catalog
from pipeline.ingestion.formats import FORMATS, detect_format, html_to_text, parse_mapping, read_rows


def _csv(rows: list[list[str]], delimiter: str = ",") -> str:
    out = io.StringIO()
    csv.writer(out, delimiter=delimiter, lineterminator="\n").writerows(rows)
    return out.getvalue()


def _read(tmp_path, name: str, text: str, **kwargs):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return read_rows(path, text, **kwargs)


def _products(read) -> dict[str, dict]:
    return {row["id"]: row for _, row in read.rows if isinstance(row, dict)}


SHOPIFY_HEADER = [
    "Handle", "Title", "Body (HTML)", "Vendor", "Product Category", "Type", "Tags", "Published",
    "Option1 Name", "Option1 Value", "Option2 Name", "Option2 Value", "Variant SKU", "Variant Price",
    "Variant Compare At Price", "Image Src", "Image Position", "Image Alt Text", "Variant Image", "Status",
]  # fmt: skip


def _shopify_rows() -> list[list[str]]:
    body = "<p>Soft <b>cotton</b> tee &amp; more&nbsp;&ndash;\n<br>machine washable</p>"
    return [
        SHOPIFY_HEADER,
        ["classic-tee", "Classic Tee", body, "Acme", "Apparel & Accessories > Clothing > Shirts", "", "summer, cotton",
         "TRUE", "Size", "S", "Color", "Red", "TEE-S-RED", "25.00", "30.00", "https://cdn/tee-2.jpg", "2", "", "",
         "active"],
        ["classic-tee", "", "", "", "", "", "", "", "", "M", "", "Blue", "TEE-M-BLUE", "19.50", "", "https://cdn/tee-1.jpg",
         "1", "", "https://cdn/tee-blue.jpg", ""],
        ["classic-tee", *[""] * 14, "https://cdn/tee-3.jpg", "3", "", "", ""],
        ["mug", "Mug", "A mug", "Acme", "Home > Kitchen > Mugs", "Drinkware", "", "TRUE", "Title", "Default Title", "",
         "", "MUG-1", "1,250.00", "", "https://cdn/mug.jpg", "1", "", "", "active"],
    ]  # fmt: skip


def test_detection_from_the_header():
    assert FORMATS == ("sample", "shopify", "woocommerce", "merchant")
    assert detect_format(SHOPIFY_HEADER) == "shopify"
    assert detect_format(WOO_HEADER) == "woocommerce"
    assert detect_format(["id", "title", "description", "link", "image_link", "price"]) == "merchant"
    assert detect_format(["g:id", "g:title", "g:price"]) == "merchant"
    assert detect_format(["id", "name", "brand", "price", "image_path"]) == "sample"
    assert detect_format(["Product Name", "Picture"]) == "sample"


def test_shopify_variants_and_image_rows_are_one_product(tmp_path):
    read = _read(tmp_path, "products.csv", _csv(_shopify_rows()), shop_url="https://shop.example/")
    assert read.format == "shopify" and read.columns == SHOPIFY_HEADER
    assert read.sentence == "Read products.csv as a Shopify product export (4 rows, 2 products)."
    assert [line for line, _ in read.rows] == [2, 6]  # the first row of each product (the body spans two lines)
    tee, mug = _products(read)["classic-tee"], _products(read)["mug"]
    assert tee["name"] == "Classic Tee" and tee["brand"] == "Acme"
    assert tee["price"] == 19.5 and "sale_price" not in tee
    assert tee["SKU"] == "TEE-S-RED" and tee["skus"] == ["TEE-S-RED", "TEE-M-BLUE"]
    assert tee["image_paths"] == [
        "https://cdn/tee-1.jpg", "https://cdn/tee-2.jpg", "https://cdn/tee-3.jpg", "https://cdn/tee-blue.jpg",
    ]  # fmt: skip
    assert tee["description"] == "Soft cotton tee & more – machine washable"
    assert tee["category"] == "Shirts" and tee["tags"] == ["summer", "cotton"] and tee["color"] == "Red"
    assert tee["url"] == "https://shop.example/products/classic-tee"
    assert mug["category"] == "Drinkware" and mug["price"] == 1250.0 and mug["skus"] == ["MUG-1"]
    assert "color" not in mug and "tags" not in mug
    assert all("image_path" not in row for _, row in read.rows)
    assert "url" not in _products(_read(tmp_path, "p2.csv", _csv(_shopify_rows())))["mug"]


def test_html_to_text():
    assert html_to_text("<div><p>a&lt;b</p><p>c</p><script>x()</script></div>") == "a<b c"
    assert html_to_text("   ") is None and html_to_text(None) is None


WOO_HEADER = [
    "ID", "Type", "SKU", "Name", "Published", "Short description", "Description", "In stock?", "Sale price",
    "Regular price", "Categories", "Tags", "Images", "Parent", "Brands", "Attribute 1 name", "Attribute 1 value(s)",
    "Attribute 2 name", "Attribute 2 value(s)",
]  # fmt: skip


def test_woocommerce_variations_join_their_parent(tmp_path):
    rows = [
        WOO_HEADER,
        ["10", "variable", "HOOD", "Hoodie", "1", "Warm", "<p>A <em>warm</em> hoodie</p>", "1", "", "",
         "Clothing > Hoodies, Clothing > Sale", "winter", "https://img/h1.jpg, https://img/h2.jpg", "", "", "Color",
         "Blue, Red", "Size", "M, L"],
        ["11", "variation", "HOOD-BLUE", "Hoodie - Blue", "1", "", "", "1", "", "45", "", "", "https://img/h-blue.jpg",
         "id:10", "", "Color", "Blue", "Size", "M"],
        ["12", "variation", "HOOD-RED", "Hoodie - Red", "1", "", "", "1", "39.99", "45", "", "", "https://img/h1.jpg",
         "HOOD", "", "Color", "Red", "Size", "L"],
        ["20", "simple", "CAP", "Cap", "1", "<b>Short</b> cap", "", "0", "", "12.00", "Accessories > Hats", "", "",
         "", "Acme", "Brand", "Other", "", ""],
        ["", "simple", "SOCK", "Sock", "1", "", "", "1", "", "3", "Accessories", "", "", "", "", "", "", "", ""],
        ["30", "variation", "LOST", "Lost", "1", "", "", "1", "", "3", "", "", "", "id:99", "", "", "", "", ""],
    ]  # fmt: skip
    read = _read(tmp_path, "wc.csv", _csv(rows))
    assert read.format == "woocommerce"
    products = _products(read)
    hoodie = products["10"]
    assert hoodie["name"] == "Hoodie" and hoodie["category"] == "Hoodies" and hoodie["tags"] == ["winter"]
    assert hoodie["skus"] == ["HOOD", "HOOD-BLUE", "HOOD-RED"] and hoodie["SKU"] == "HOOD"
    assert hoodie["price"] == 39.99 and hoodie["sale_price"] == "39.99" and hoodie["regular_price"] == "45"
    assert hoodie["image_paths"] == ["https://img/h1.jpg", "https://img/h2.jpg", "https://img/h-blue.jpg"]
    assert hoodie["description"] == "A warm hoodie" and hoodie["color"] == "Blue"
    cap = products["20"]
    assert cap["price"] == 12.0 and cap["brand"] == "Acme" and cap["description"] == "Short cap"
    assert cap["availability"] == "out of stock" and cap["image_paths"] == [] and cap["category"] == "Hats"
    assert products["SOCK"]["category"] == "Accessories"  # no ID: the SKU is the id
    assert [(line, r) for line, r in read.rows if isinstance(r, str)] == [
        (7, "a variation of id:99, which is not in the file")
    ]
    assert read.sentence == "Read wc.csv as a WooCommerce product export (6 rows, 4 products)."


MERCHANT = [
    ["id", "title", "description", "link", "image_link", "additional_image_link", "price", "sale_price", "brand",
     "color", "gender", "product_type", "google_product_category", "availability", "item_group_id"],
    ["S-RED-M", "Shirt red M", "Cotton shirt", "https://shop/shirt", "https://img/red.jpg",
     "https://img/red-2.jpg,https://img/red-3.jpg", "15.00 USD", "", "Acme", "Red", "male", "Apparel > Shirts",
     "1604", "in_stock", "SHIRT"],
    ["S-BLUE-M", "Shirt blue M", "", "https://shop/shirt?c=blue", "https://img/blue.jpg", "https://img/red-2.jpg",
     "16.00 USD", "12.50 USD", "Acme", "Blue", "male", "Apparel > Shirts", "", "in_stock", "SHIRT"],
    ["MUG", "Mug", "A <b>mug</b>", "https://shop/mug", "https://img/mug.jpg", "", "9.99 EUR", "", "Acme", "", "",
     "", "Home & Garden > Kitchen > Mugs", "out_of_stock", ""],
]  # fmt: skip


@pytest.mark.parametrize(("name", "delimiter"), [("feed.tsv", "\t"), ("feed.txt", "\t"), ("feed.csv", ",")])
def test_merchant_table_feeds(tmp_path, name, delimiter):
    rows = [[cell.replace(",", " , ") if delimiter == "," and i == 5 else cell for i, cell in enumerate(row)]
            for row in MERCHANT]  # fmt: skip
    read = _read(tmp_path, name, _csv(rows, delimiter))
    assert read.format == "merchant" and read.columns == MERCHANT[0]
    products = _products(read)
    assert set(products) == {"SHIRT", "MUG"}
    mug = products["MUG"]
    assert mug["price"] == 9.99 and mug["currency"] == "EUR" and mug["category"] == "Mugs"
    assert mug["description"] == "A mug" and mug["url"] == "https://shop/mug" and mug["skus"] == ["MUG"]
    assert mug["availability"] == "out_of_stock" and mug["image_paths"] == ["https://img/mug.jpg"]
    shirt = products["SHIRT"]
    assert shirt["skus"] == ["S-RED-M", "S-BLUE-M"] and shirt["SKU"] == "S-RED-M"
    assert shirt["price"] == 12.5 and shirt["sale_price"] == 12.5 and shirt["regular_price"] == 16.0
    assert shirt["currency"] == "USD" and shirt["category"] == "Shirts" and shirt["color"] == "Red"
    assert shirt["gender"] == "male" and shirt["name"] == "Shirt red M" and shirt["url"] == "https://shop/shirt"
    assert shirt["image_paths"] == [
        "https://img/red.jpg", "https://img/red-2.jpg", "https://img/red-3.jpg", "https://img/blue.jpg",
    ]  # fmt: skip
    assert [line for line, _ in read.rows] == [2, 4]


def test_merchant_price_alone(tmp_path):
    read = _read(tmp_path, "f.tsv", _csv([["g:id", "g:title", "g:price"], ["1", "One", "15.00 USD"]], "\t"))
    assert read.rows == [(2, {"id": "1", "name": "One", "price": 15.0, "currency": "USD", "SKU": "1", "skus": ["1"],
                              "image_paths": []})]  # fmt: skip


RSS = """<?xml version="1.0" encoding="UTF-8"?>
<rss version="2.0" xmlns:g="http://base.google.com/ns/1.0">
  <channel>
    <title>Shop</title>
    <link>https://shop</link>
    <item>
      <g:id>A1</g:id>
      <title>Lamp</title>
      <link>https://shop/lamp</link>
      <description>Bright &amp; warm</description>
      <g:image_link>https://img/lamp.jpg</g:image_link>
      <g:additional_image_link>https://img/lamp-2.jpg</g:additional_image_link>
      <g:additional_image_link>https://img/lamp-3.jpg</g:additional_image_link>
      <g:price>20.00 USD</g:price>
      <g:brand>Lumo</g:brand>
      <g:product_type>Home &gt; Lighting &gt; Lamps</g:product_type>
      <g:shipping><g:country>US</g:country><g:price>5 USD</g:price></g:shipping>
    </item>
    <item>
      <g:id>B2</g:id>
      <g:title>Chair</g:title>
      <g:link>https://shop/chair</g:link>
      <g:image_link>https://img/chair.jpg</g:image_link>
      <g:price>45.50 USD</g:price>
      <g:sale_price>40 USD</g:sale_price>
    </item>
  </channel>
</rss>
"""

ATOM = """<?xml version="1.0"?>
<feed xmlns="http://www.w3.org/2005/Atom" xmlns:g="http://base.google.com/ns/1.0">
  <title>Shop</title>
  <entry>
    <id>tag:shop,2024:1</id>
    <g:id>A1</g:id>
    <title>Lamp</title>
    <link rel="alternate" href="https://shop/lamp"/>
    <g:description>Bright</g:description>
    <g:image_link>https://img/lamp.jpg</g:image_link>
    <g:additional_image_link>https://img/lamp-2.jpg</g:additional_image_link>
    <g:price>20.00 USD</g:price>
    <g:item_group_id>LAMP</g:item_group_id>
  </entry>
  <entry>
    <g:id>A2</g:id>
    <title>Lamp (large)</title>
    <g:image_link>https://img/lamp-l.jpg</g:image_link>
    <g:price>30.00 USD</g:price>
    <g:item_group_id>LAMP</g:item_group_id>
  </entry>
</feed>
"""


def test_merchant_rss_feed(tmp_path):
    read = _read(tmp_path, "feed.xml", RSS)
    assert read.format == "merchant" and "g:id" in read.columns and "title" in read.columns
    assert read.sentence == "Read feed.xml as a Google Merchant Center feed (2 rows)."
    lamp, chair = _products(read)["A1"], _products(read)["B2"]
    assert lamp["name"] == "Lamp" and lamp["url"] == "https://shop/lamp" and lamp["description"] == "Bright & warm"
    assert lamp["image_paths"] == ["https://img/lamp.jpg", "https://img/lamp-2.jpg", "https://img/lamp-3.jpg"]
    assert lamp["price"] == 20.0 and lamp["currency"] == "USD" and lamp["category"] == "Lamps"
    assert lamp["brand"] == "Lumo"
    assert chair["name"] == "Chair" and chair["url"] == "https://shop/chair"
    assert chair["price"] == 40.0 and chair["regular_price"] == 45.5
    assert [line for line, _ in read.rows] == [6, 19]


def test_merchant_atom_feed(tmp_path):
    read = _read(tmp_path, "feed.atom", ATOM)  # the content says XML, whatever the suffix
    assert read.format == "merchant"
    assert list(_products(read)) == ["LAMP"]
    lamp = _products(read)["LAMP"]
    assert lamp["skus"] == ["A1", "A2"] and lamp["price"] == 20.0 and lamp["url"] == "https://shop/lamp"
    assert lamp["image_paths"] == ["https://img/lamp.jpg", "https://img/lamp-2.jpg", "https://img/lamp-l.jpg"]
    assert lamp["description"] == "Bright" and lamp["name"] == "Lamp"


BILLION_LAUGHS = """<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol9 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
]>
<rss xmlns:g="http://base.google.com/ns/1.0"><channel><item><g:id>1</g:id><title>&lol9;</title></item></channel></rss>
"""
EXTERNAL = """<?xml version="1.0"?>
<!DOCTYPE rss [<!ENTITY x SYSTEM "file:///etc/passwd">]>
<rss xmlns:g="http://base.google.com/ns/1.0"><channel><item><g:id>1</g:id><title>&x;</title></item></channel></rss>
"""


@pytest.mark.parametrize("content", [BILLION_LAUGHS, EXTERNAL], ids=["billion-laughs", "external-entity"])
def test_hostile_xml_is_refused_before_anything_is_read(tmp_path, content):
    with pytest.raises(CatalogError, match=r"declares a DTD or entities.*nothing was read"):
        _read(tmp_path, "feed.xml", content)
    (tmp_path / "feed.xml").write_text(content)
    with pytest.raises(CatalogError, match="nothing was read"):
        read_catalog(tmp_path / "feed.xml")


def test_broken_xml_is_one_sentence(tmp_path):
    with pytest.raises(CatalogError, match="not well-formed XML"):
        _read(tmp_path, "feed.xml", "<rss><channel><item>")
    with pytest.raises(CatalogError, match="no <item>"):
        _read(tmp_path, "feed.xml", "<rss><channel></channel></rss>")


def test_format_forced(tmp_path):
    header = ["id", "title", "link", "image_link", "price"]
    text = _csv([header, ["1", "Lamp", "https://shop/lamp", "https://img/l.jpg", "5 USD"]])
    assert _read(tmp_path, "f.csv", text).format == "merchant"
    forced = _read(tmp_path, "f.csv", text, fmt="sample")
    assert forced.format == "sample" and forced.rows[0][1]["title"] == "Lamp" and forced.rows[0][1]["price"] == "5 USD"
    assert forced.sentence == "Read f.csv as the sample schema (--format sample; 1 row)."
    odd = _csv([["id", "name", "Regular price"], ["7", "Cap", "4"]])  # too few WooCommerce columns to tell
    assert _read(tmp_path, "w.csv", odd).format == "sample"
    assert _products(_read(tmp_path, "w.csv", odd, fmt="woocommerce"))["7"]["price"] == 4.0
    with pytest.raises(CatalogError, match="no Handle column, which a Shopify product export has"):
        _read(tmp_path, "f.csv", text, fmt="shopify")
    with pytest.raises(CatalogError, match="choose one of auto, sample, shopify, woocommerce, merchant"):
        _read(tmp_path, "f.csv", text, fmt="magento")
    with pytest.raises(CatalogError, match="JSON, which is read in the sample schema only"):
        _read(tmp_path, "f.jsonl", '{"id": 1}\n', fmt="shopify")


def test_parse_mapping():
    assert parse_mapping("Product Name=name, Picture = image_path") == {"Product Name": "name", "Picture": "image_path"}
    for bad in ("", "name", "=name", "Picture=", "a=name,a=text", "a=name,b=name"):
        with pytest.raises(CatalogError, match="--map"):
            parse_mapping(bad)


def test_map_renames_columns(tmp_path):
    text = _csv([["Ref", "Product Name", "Pictures", "Cost", "Colour"],
                 ["p1", "Lamp", "a.jpg, b.jpg", "5.5", "red"]])  # fmt: skip
    mapping = parse_mapping("Ref=id,Product Name=name,Pictures=image_path,Cost=price")
    read = _read(tmp_path, "shop.csv", text, mapping=mapping)
    assert read.format == "mapped" and read.columns == ["Ref", "Product Name", "Pictures", "Cost", "Colour"]
    assert read.rows == [(2, {"id": "p1", "name": "Lamp", "price": "5.5", "Colour": "red",
                              "image_paths": ["a.jpg", "b.jpg"]})]  # fmt: skip
    assert read.sentence.startswith("Read shop.csv with its columns renamed by --map (Ref → id, Product Name → name")
    with pytest.raises(
        CatalogError, match=r"names the column Picture, which shop\.csv does not have: its columns are Ref"
    ):
        _read(tmp_path, "shop.csv", text, mapping={"Picture": "image_path", "Ref": "id"})
    with pytest.raises(CatalogError, match="do not go together"):
        _read(tmp_path, "shop.csv", text, mapping=mapping, fmt="shopify")


def test_columns_that_map_onto_nothing(tmp_path):
    text = _csv([["Product Name", "Picture", "Cost"], ["Lamp", "a.jpg", "5"]])
    with pytest.raises(CatalogError) as err:
        _read(tmp_path, "products.csv", text)
    message = str(err.value)
    assert message.startswith("products.csv has the columns Product Name, Picture, Cost, none of which is an id or a ")
    assert '--map "Product Name=name,Picture=image_path"' in message
    with pytest.raises(CatalogError, match="none of which is an id or a name"):
        _read(tmp_path, "products.csv", text, mapping={"Picture": "image_path"})
    assert _read(tmp_path, "products.csv", text, mapping={"Product Name": "name"}).rows[0][1]["name"] == "Lamp"


def test_sample_schema_unchanged(tmp_path):
    rows = [
        {"id": "1", "name": "A", "image_path": "a.jpg", "gender": "Men", "articleType": "Tshirts"},
        {"id": "2", "name": "B", "image_paths": ["b.jpg", "c.jpg"], "additional_image_paths": ["c.jpg", "d.jpg"]},
    ]
    read = _read(tmp_path, "c.json", json.dumps(rows, indent=2))
    assert read.format == "sample" and read.sentence == "Read c.json as the sample schema (2 rows)."
    assert read.rows == [
        (2, {"id": "1", "name": "A", "gender": "Men", "articleType": "Tshirts", "image_paths": ["a.jpg"]}),
        (9, {"id": "2", "name": "B", "image_paths": ["b.jpg", "c.jpg", "d.jpg"]}),
    ]
    lines = _read(tmp_path, "c.jsonl", '{"id": 1, "name": "x"}\n\n{oops\n[1]\n')
    assert lines.rows == [(1, {"id": 1, "name": "x", "image_paths": []}), (3, lines.rows[1][1]), (4, [1])]
    assert lines.rows[1][1].startswith("not valid JSON")
    table = _read(tmp_path, "c.csv", "id,name,price,image_path\n1,Mug,,m.jpg\n2,Cup,3,\n")
    assert table.rows == [(2, {"id": "1", "name": "Mug", "price": None, "image_paths": ["m.jpg"]}),
                          (3, {"id": "2", "name": "Cup", "price": "3", "image_paths": []})]  # fmt: skip
    assert _read(tmp_path, "c.txt", '{"id": 1, "name": "x"}\n').rows[0][1]["id"] == 1  # JSON Lines as before
    with pytest.raises(CatalogError, match="JSON array"):
        _read(tmp_path, "c.json", '{"products": 5}')


def test_read_catalog_names_the_format(tmp_path):
    from PIL import Image

    Image.new("RGB", (16, 16), "red").save(tmp_path / "lamp.jpg")
    (tmp_path / "feed.tsv").write_text(
        _csv(
            [
                ["id", "title", "image_link", "link", "price"],
                ["L1", "Lamp", "lamp.jpg", "https://s/l", "5.00 USD"],
                ["L2", "Gone", "nope.jpg", "https://s/g", "1 USD"],
            ],
            "\t",
        )
    )
    rows = read_catalog(tmp_path / "feed.tsv")
    assert (
        rows.format == "merchant" and rows.format_sentence == "Read feed.tsv as a Google Merchant Center feed (2 rows)."
    )
    assert [p.id for p in rows.products] == ["L1"] and rows.products[0].fields["price"] == 5.0
    assert rows.products[0].fields["currency"] == "USD" and rows.bad[0].line == 3
    with pytest.raises(CatalogError, match="none of which is an id or a name"):
        (tmp_path / "x.csv").write_text("Product Name,Picture\nLamp,lamp.jpg\n")
        read_catalog(tmp_path / "x.csv")
    assert read_catalog(tmp_path / "x.csv", mapping={"Product Name": "name", "Picture": "image_path"}).bad[
        0
    ].reason == ("missing id")
