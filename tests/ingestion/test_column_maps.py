"""Column mappings chosen in the Catalogue tab: what a file is read as, the suggested choice per field, the mapping it
makes, and the choice remembered per catalogue (by its columns) in the data folder."""

from __future__ import annotations

import json

import pytest

from pipeline.errors import CatalogError
from pipeline.ingestion.catalog_reader import file_columns, read_catalog
from pipeline.ingestion.column_maps import ColumnMaps, mapping_from_choices, signature, suggested

OWN = ["Ref", "Product Name", "Maker", "Cost", "Picture"]


def test_a_file_is_known_by_its_format_and_columns(tmp_path):
    own = tmp_path / "stock.csv"
    own.write_text(",".join(OWN) + "\nsl-1,Deck shoes,Harbour,44.50,shoes.jpg\n")
    found = file_columns(own)
    assert (found.format, found.columns, found.mappable) == ("sample", OWN, True)

    shopify = tmp_path / "products_export.csv"
    shopify.write_text("Handle,Title,Body (HTML),Vendor,Variant SKU,Variant Price,Image Src\nh,T,,V,S,1,\n")
    assert (file_columns(shopify).format, file_columns(shopify).mappable) == ("shopify", False)

    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps({"Ref": "a", "Title": "x"}) + "\n" + json.dumps({"Ref": "b", "Cost": 2}) + "\n")
    assert file_columns(rows).columns == ["Ref", "Title", "Cost"]

    binary = tmp_path / "sheet.csv"
    binary.write_bytes(b"PK\x03\x04\x00\x00binary")
    with pytest.raises(CatalogError, match="not a text catalogue"):
        file_columns(binary)


def test_suggestions_take_same_named_columns_then_the_remembered_choice():
    columns = ["ID", "Title", "price", "Picture", "image_paths"]
    chosen = suggested(columns)
    assert (chosen["id"], chosen["price"], chosen["image_path"], chosen["name"]) == ("ID", "price", "image_paths", None)
    chosen = suggested(columns, {"Title": "name", "Picture": "image_path", "Gone": "brand"})
    assert (chosen["name"], chosen["image_path"], chosen["brand"]) == ("Title", "Picture", None)


def test_choices_make_the_renames_only_and_refuse_one_column_twice():
    choices = {"id": "Ref", "name": "Product Name", "price": "Cost", "image_path": "Picture", "brand": None}
    assert mapping_from_choices(choices, OWN) == {
        "Ref": "id",
        "Product Name": "name",
        "Cost": "price",
        "Picture": "image_path",
    }
    assert mapping_from_choices({"id": "ID", "name": None}, ["ID", "x"]) == {}  # already named: nothing to rename
    with pytest.raises(CatalogError, match="The column Ref is chosen for both id and name"):
        mapping_from_choices({"id": "Ref", "name": "Ref"}, OWN)
    with pytest.raises(CatalogError, match="no column 'Colour'"):
        mapping_from_choices({"color": "Colour"}, OWN)


def test_the_mapping_reads_the_file(tmp_path):
    own = tmp_path / "stock.csv"
    (tmp_path / "shoes.jpg").write_bytes(b"")
    own.write_text(",".join(OWN) + "\nsl-1,Deck shoes,Harbour,44.50,\n")
    mapping = mapping_from_choices({"id": "Ref", "name": "Product Name", "brand": "Maker", "price": "Cost"}, OWN)
    read = read_catalog(own, tmp_path, fmt="auto", mapping=mapping)
    assert [(p.id, p.fields["name"], p.fields["brand"], p.fields["price"]) for p in read.products] == [
        ("sl-1", "Deck shoes", "Harbour", 44.5)
    ]


def test_remembered_per_catalogue_by_its_columns_and_survives_a_damaged_file(tmp_path):
    maps = ColumnMaps(tmp_path / "data" / "column_maps.json")
    assert maps.get(OWN) is None
    maps.put(OWN, {"Ref": "id", "Product Name": "name"}, "stock.csv")
    shuffled = list(reversed(OWN))
    assert signature(shuffled) == signature(OWN)
    assert ColumnMaps(maps.path).get(shuffled) == {"Ref": "id", "Product Name": "name"}  # a new process reads it
    assert maps.get([*OWN, "Extra"]) is None  # other columns: another catalogue
    maps.put(OWN, {})
    assert maps.get(OWN) is None
    maps.path.write_text("{not json")
    assert maps.get(OWN) is None
    maps.put(OWN, {"Ref": "id"})
    assert maps.get(OWN) == {"Ref": "id"}
    assert not list(maps.path.parent.glob(".column_maps-*")), "no temporary file is left behind"


def test_a_mapping_renames_the_keys_of_json_lines_too(tmp_path):
    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps({"Ref": "j-1", "Title": "Rope key ring", "Cost": 6}) + "\n")
    read = read_catalog(rows, tmp_path, mapping={"Ref": "id", "Title": "name", "Cost": "price"})
    assert [(p.id, p.fields["name"], p.fields["price"]) for p in read.products] == [("j-1", "Rope key ring", 6.0)]
    assert read.format_sentence.startswith("Read rows.jsonl with its columns renamed by --map (Ref → id")
