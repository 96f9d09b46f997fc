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


@pytest.mark.parametrize("text", [str(2**63), str(2**70), "9" * 5000])
def test_ids_beyond_int64_are_out_of_range_not_garbage(text):
    from postergenre.validation import describe_bad_id

    assert parse_movie_id(text) is None
    assert "out of range" in describe_bad_id(text)


def test_the_largest_int64_id_and_leading_zeros_parse():
    assert parse_movie_id(str(2**63 - 1)) == 2**63 - 1
    assert parse_movie_id("0" * 30 + "7") == 7
    assert poster_id_from_name(f"{2**70}.jpg") is None


def test_a_huge_id_row_says_out_of_range():
    parsed = parse_genres_csv(f"id,genre\n{2**70},Drama\nx1,Drama\n".encode())
    details = [r.detail for r in parsed.rejected]
    assert "out of range" in details[0] and "not a number" in details[1]


def test_an_image_over_the_pixel_cap_is_refused_from_its_header():
    data = _jpeg(size=(400, 300))
    assert check_poster(data, max_pixels=120_000).reason is None
    refused = check_poster(data, max_pixels=119_999)
    assert refused.reason == "too_many_pixels" and "120000 pixels" in refused.detail


def test_decode_cost_from_the_header_alone():
    from postergenre.validation import decode_cost

    png = _jpeg(size=(100, 50), fmt="PNG")
    assert decode_cost(png[:64], 10**6) == 100 * 50 * 4
    assert decode_cost(_jpeg(size=(800, 800)), 10**7) == 800 * 800 * 4 // 64  # JPEG decodes at 1/8 scale
    assert decode_cost(png[:64], 1000) == 0  # over the cap: never decoded
    assert decode_cost(b"garbage", 1000) == 4000  # unknown: the worst the cap allows
