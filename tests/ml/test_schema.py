from __future__ import annotations

import pandas as pd
import pytest

from ml import schema
from ml.errors import BadInputError


def raw(**columns: list) -> pd.DataFrame:
    base = {
        "id": ["a", "b", "c", "d"],
        "description": ["SUT SILK 3-0", "CATH FOLEY 16FR", "GLOVE NITRILE", "IV SET"],
        "cost": ["12.5", "", "3", "7"],
        "contract": ["", "", "", ""],
        "department": ["OR", "ICU", "", "ER"],
        "category": ["Sutures", "Catheters", "Gloves", "IV"],
    }
    return pd.DataFrame({**base, **columns})


def test_valid_rows_pass_and_missing_cost_is_allowed() -> None:
    report = schema.validate(raw(), labeled=True)
    assert report.n_bad == 0 and report.bad == {}
    good, _ = schema.clean(raw(), labeled=True, max_bad_share=0.0)
    assert len(good) == 4
    assert good["cost"].isna().sum() == 1


def test_every_bad_row_is_reported_with_its_id_and_reason() -> None:
    frame = raw(
        id=["a", "a", "", "d"],
        description=["SUT", "  ", "GLOVE", "IV"],
        cost=["-1", "abc", "3", "inf"],
        category=["S", "C", "G", ""],
    )
    report = schema.validate(frame, labeled=True)
    assert report.bad["cost is negative"] == ["a"]
    assert report.bad["cost is not a number"] == ["a"]
    assert report.bad["id is duplicated"] == ["a"]
    assert report.bad["description is empty"] == ["a"]
    assert report.bad["id is empty"] == ["<row 2>"]
    assert report.bad["cost is infinite"] == ["d"]
    assert report.bad["category is empty"] == ["d"]
    assert report.n_bad == 4
    assert "4 of 4 rows invalid" in report.summary()


def test_clean_refuses_when_bad_share_exceeds_limit_and_never_drops_silently() -> None:
    frame = raw(cost=["-1", "2", "3", "4"])
    with pytest.raises(BadInputError, match=r"25\.0% exceeds the limit 10\.0%"):
        schema.clean(frame, labeled=True, max_bad_share=0.10)
    good, report = schema.clean(frame, labeled=True, max_bad_share=0.30)
    assert list(good["id"]) == ["b", "c", "d"]
    assert report.bad == {"cost is negative": ["a"]}


def test_missing_required_column_names_it() -> None:
    with pytest.raises(BadInputError, match=r"missing required column.*description"):
        schema.validate(raw().drop(columns="description"), labeled=True)


def test_unreadable_file_is_bad_input(tmp_path) -> None:
    with pytest.raises(BadInputError, match="not found"):
        schema.read_records(str(tmp_path / "nope.csv"))


def test_windows_1252_export_is_refused_naming_the_option_then_read_with_it(tmp_path) -> None:
    path = tmp_path / "export.csv"
    # "Ø" (diameter) and an en dash: bytes 0xD8 and 0x96 in Windows-1252, invalid as UTF-8
    raw(description=["SCREW Ø4.5 – 40MM", "CATH FOLEY 16FR", "GLOVE NITRILE", "IV SET"]).to_csv(
        path, index=False, encoding="cp1252"
    )
    with pytest.raises(BadInputError, match=r"as utf-8 text.*--encoding cp1252"):
        schema.read_records(str(path))
    frame = schema.read_records(str(path), encoding="cp1252")
    assert frame["description"][0] == "SCREW Ø4.5 – 40MM"
    with pytest.raises(BadInputError, match="unknown encoding 'klingon'"):
        schema.read_records(str(path), encoding="klingon")


def test_the_chunked_reader_refuses_as_the_whole_file_reader_does(tmp_path) -> None:
    """``ml evaluate`` reads a large file in chunks: the same refusals, naming the file and the option."""
    path = tmp_path / "export.csv"
    raw(description=["SCREW Ø4.5 – 40MM", "CATH FOLEY 16FR", "GLOVE NITRILE", "IV SET"]).to_csv(
        path, index=False, encoding="cp1252"
    )
    with pytest.raises(BadInputError, match="not found"):
        list(schema.read_record_chunks(str(tmp_path / "nope.csv"), "utf-8", 2))
    with pytest.raises(BadInputError, match=r"as utf-8 text.*--encoding cp1252"):
        list(schema.read_record_chunks(str(path), "utf-8", 2))
    with pytest.raises(BadInputError, match="unknown encoding 'klingon'"):
        list(schema.read_record_chunks(str(path), "klingon", 2))
    chunks = list(schema.read_record_chunks(str(path), "cp1252", 3))
    assert [len(c) for c in chunks] == [3, 1] and list(chunks[1].index) == [3]
    pd.testing.assert_frame_equal(pd.concat(chunks), schema.read_records(str(path), encoding="cp1252"))
