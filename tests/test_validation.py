import io

import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from postergenre.genres import GENRES
from postergenre.validation import (
    ExportError,
    check_poster,
    parse_genres_csv,
    parse_movie_id,
    poster_id_from_name,
)


def _jpeg(size=(23, 34), fmt="JPEG") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (200, 30, 40)).save(buf, fmt)
    return buf.getvalue()


@pytest.mark.parametrize("text", ["../../x", "/etc/passwd", "..\\x", "-1", "1e6", "12 3", "", "abc", "1.0"])
def test_hostile_or_malformed_ids_are_rejected(text):
    assert parse_movie_id(text) is None


def test_plain_ids_parse_with_surrounding_space():
    assert parse_movie_id(" 1000001 ") == 1000001


def test_header_is_required():
    with pytest.raises(ExportError, match="header 'id,genre'"):
        parse_genres_csv(b"movie,genre\n1,Drama\n")


def test_non_utf8_is_a_clear_export_error():
    with pytest.raises(ExportError, match="not UTF-8"):
        parse_genres_csv(b"id,genre\n1,\xff\xfe\n")


def test_bom_crlf_blank_lines_and_normalised_names():
    data = "\ufeffid,genre\r\n1, drama \r\n\r\n2,SCIENCE  FICTION\r\n2,tv movie\r\n".encode()
    parsed = parse_genres_csv(data)
    assert parsed.rows == [(1, "Drama"), (2, "Science Fiction"), (2, "TV Movie")]
    assert parsed.blank_lines == 1
    assert parsed.rejected == []


def test_every_bad_line_is_quarantined_with_its_reason_and_line_number():
    data = (
        b"id,genre\n"
        b"1,Drama\n"
        b"1,drama\n"  # duplicate after normalisation
        b"2,Anime\n"  # unknown genre
        b"../../x,Drama\n"  # hostile id
        b"3,Drama,extra\n"  # wrong field count
        b'4,"Drama\n'  # unclosed quote must not swallow the next line
        b"5,Comedy\n"
    )
    parsed = parse_genres_csv(data)
    assert parsed.rows == [(1, "Drama"), (5, "Comedy")]
    reasons = {r.line: r.reason for r in parsed.rejected}
    assert reasons == {
        3: "duplicate_row",
        4: "unknown_genre",
        5: "invalid_id",
        6: "malformed_row",
        7: "malformed_row",
    }
    unknown = next(r for r in parsed.rejected if r.reason == "unknown_genre")
    assert unknown.movie_id == 2 and unknown.raw == "2,Anime"


@given(
    st.lists(st.tuples(st.integers(0, 10**9), st.sampled_from(GENRES + ("Anime", ""))), max_size=40),
    st.booleans(),
)
def test_no_line_is_lost(pairs, crlf):
    """Every non-blank input line ends up either as a clean row or as exactly one quarantine entry."""
    newline = "\r\n" if crlf else "\n"
    text = "id,genre" + newline + "".join(f"{i},{g}{newline}" for i, g in pairs)
    parsed = parse_genres_csv(text.encode())
    assert len(parsed.rows) + len(parsed.rejected) + parsed.blank_lines == len(pairs)
    assert len(set(parsed.rows)) == len(parsed.rows)


@pytest.mark.parametrize(
    "name,expected",
    [
        ("1000001.jpg", 1000001),
        ("7.JPEG", 7),
        ("9.png", 9),
        ("../1.jpg", None),
        ("/etc/1.jpg", None),
        ("a/1.jpg", None),
        ("1.gif", None),
        ("x.jpg", None),
    ],
)
def test_poster_names(name, expected):
    assert poster_id_from_name(name) == expected


def test_valid_jpeg_and_png_by_content():
    jpeg = check_poster(_jpeg())
    assert jpeg.reason is None and jpeg.format == "jpeg" and (jpeg.width, jpeg.height) == (23, 34)
    png = check_poster(_jpeg(fmt="PNG"))
    assert png.reason is None and png.format == "png"


@pytest.mark.parametrize(
    "data,reason",
    [
        (b"", "empty_poster"),
        (b"hello, I am text pretending to be a jpg", "not_an_image"),
        (b"\xff\xd8\xff" + bytes(range(256)) * 4, "corrupt_poster"),
    ],
)
def test_bad_posters(data, reason):
    assert check_poster(data).reason == reason


def test_truncated_jpeg_is_caught():
    data = _jpeg((230, 345))
    assert check_poster(data[: len(data) // 2]).reason == "corrupt_poster"


def test_decode_can_be_skipped_for_known_blobs():
    data = _jpeg()
    truncated = data[: len(data) // 2]
    assert check_poster(truncated, decode=False).reason is None  # trusted: its hash was validated before
