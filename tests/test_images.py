"""The poster input pipeline: letterbox geometry, exact skip counting, batching, order and shuffling."""

import io

import numpy as np
import pytest
import tensorflow as tf
from hostile_checks import huge_png
from PIL import Image

from postergenre.images import (
    DecodeStats,
    PosterError,
    decode_resize_reference,
    indexed_dataset,
    load_image,
    make_dataset,
    read_header,
    scan_decodable,
)

RED = (255, 0, 0)


def encode(img: Image.Image, fmt: str = "JPEG") -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return buf.getvalue()


def solid(width: int, height: int, colour=RED, fmt: str = "PNG") -> bytes:
    return encode(Image.new("RGB", (width, height), colour), fmt)


def content_box(image: np.ndarray) -> tuple[slice, slice]:
    """Rows and columns that hold any non-black pixel."""
    rows = np.flatnonzero(image.max(axis=(1, 2)) > 0)
    cols = np.flatnonzero(image.max(axis=(0, 2)) > 0)
    return slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)


@pytest.mark.parametrize(("width", "height"), [(64, 32), (30, 90), (50, 50), (8, 12)])
def test_letterbox_keeps_aspect_ratio_and_pads_with_black(width, height):
    size = 48
    image = load_image(solid(width, height), size)
    assert image.shape == (size, size, 3) and image.dtype == np.float32
    rows, cols = content_box(image)
    content_h, content_w = rows.stop - rows.start, cols.stop - cols.start
    assert max(content_h, content_w) == size  # scaled to fit the square exactly
    assert content_w / content_h == pytest.approx(width / height, rel=0.1)
    # Centred: the bars on either side differ by at most one pixel.
    assert abs(rows.start - (size - rows.stop)) <= 1 and abs(cols.start - (size - cols.stop)) <= 1
    inner = image[rows.start + 1 : rows.stop - 1, cols.start + 1 : cols.stop - 1]
    np.testing.assert_allclose(inner, np.broadcast_to(np.array(RED, np.float32), inner.shape), atol=1e-3)
    assert image.min() >= 0.0 and image.max() <= 255.0


def test_load_image_reads_paths_and_bytes_alike_and_converts_to_rgb(tmp_path):
    grey_alpha = encode(Image.new("LA", (20, 30), (128, 200)), "PNG")
    path = tmp_path / "p.png"
    path.write_bytes(grey_alpha)
    from_path, from_bytes = load_image(path, 32), load_image(grey_alpha, 32)
    assert from_path.shape == (32, 32, 3)
    np.testing.assert_array_equal(from_path, from_bytes)


def test_load_image_raises_on_undecodable_bytes():
    with pytest.raises(PosterError, match="not an image"):
        load_image(b"definitely not an image", 32)


def _bad_poster_files(tmp_path):
    jpeg = solid(40, 60, fmt="JPEG")
    noise = np.random.default_rng(0).integers(0, 256, (300, 200, 3), dtype=np.uint8)
    cut = encode(Image.fromarray(noise), "JPEG")[
        :20000
    ]  # header intact, pixel data cut: only the decode sees it
    files = {
        "cut.jpg": cut,
        "text.jpg": b"<html>404 not found</html>\n",
        "zero.jpg": b"",
        "truncated.jpg": jpeg[: len(jpeg) // 2],
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    (tmp_path / "folder.jpg").mkdir()
    return {
        "text.jpg": "is not an image",
        "zero.jpg": r"is empty \(0 bytes\)",
        "truncated.jpg": "truncated or corrupt JPEG",
        "cut.jpg": r"truncated or corrupt JPEG \(.*JPEG",
        "folder.jpg": "is a directory",
        "missing.jpg": "does not exist",
    }


def test_each_kind_of_bad_single_poster_is_a_one_line_error_naming_it(tmp_path):
    for name, reason in _bad_poster_files(tmp_path).items():
        with pytest.raises(PosterError, match=reason) as caught:
            load_image(tmp_path / name, 32)
        assert str(tmp_path / name) in str(caught.value) and "\n" not in str(caught.value)
        assert isinstance(caught.value, ValueError)


def test_a_pixel_bomb_is_refused_from_its_header_without_decoding(tmp_path):
    import tracemalloc

    (tmp_path / "bomb.png").write_bytes(huge_png(20000, 20000))  # 48 KB, 1.2 GB of RGB once decoded
    (tmp_path / "big.png").write_bytes(huge_png(3000, 3000))  # under PIL's own limit, over ours
    with pytest.raises(PosterError, match="400000000 pixels, over the cap of 25000000"):
        load_image(tmp_path / "bomb.png", 32)
    tracemalloc.start()
    try:
        with pytest.raises(PosterError, match=r"3000x3000 = 9000000 pixels, over the cap of 1000000"):
            load_image(tmp_path / "big.png", 32, max_pixels=1_000_000)
        assert tracemalloc.get_traced_memory()[1] < 4 * 2**20  # 27 MB if it had been decoded
    finally:
        tracemalloc.stop()
    assert load_image(tmp_path / "big.png", 32, max_pixels=9_000_000).shape == (
        32,
        32,
        3,
    )  # the cap is the cap
    with pytest.raises(PosterError, match="POSTERGENRE_MAX_POSTER_BYTES"):
        load_image(tmp_path / "big.png", 32, max_bytes=100)


def test_pipelines_skip_pixel_bombs_without_decoding_them(tmp_path):
    good = tmp_path / "good.png"
    good.write_bytes(solid(20, 30))
    (tmp_path / "bomb.png").write_bytes(huge_png(20000, 20000))
    paths = [good, tmp_path / "bomb.png", good]
    assert scan_decodable(paths).skipped_indices == (1,)
    ds, stats = make_dataset(paths, np.arange(3), image_size=16, batch_size=4)
    assert stats.skipped_indices == (1,) and np.concatenate(
        [y for _, y in ds.as_numpy_iterator()]
    ).tolist() == [0, 2]
    indices = np.concatenate(
        [i for i, _ in indexed_dataset(paths, image_size=16, batch_size=4).as_numpy_iterator()]
    )
    assert indices.tolist() == [0, 2]


def _with_orientation(img: Image.Image, orientation: int, fmt: str = "PNG") -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    img.save(buf, fmt, exif=exif.tobytes())
    return buf.getvalue()


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied_like_pil_exif_transpose(orientation):
    from PIL import ImageOps

    pixels = np.random.default_rng(orientation).integers(0, 256, (13, 29, 3), dtype=np.uint8)
    tagged = _with_orientation(Image.fromarray(pixels), orientation)
    assert read_header(tagged) == (29, 13, orientation)
    upright = ImageOps.exif_transpose(Image.open(io.BytesIO(tagged)))
    for size in (16, 29):
        np.testing.assert_array_equal(load_image(tagged, size), load_image(encode(upright, "PNG"), size))


def test_training_and_prediction_see_a_tagged_poster_the_same_way(tmp_path):
    path = tmp_path / "sideways.jpg"
    path.write_bytes(_with_orientation(Image.new("RGB", (20, 60), RED), 6, fmt="JPEG"))  # tall, stored as-is
    served = load_image(path, 30)
    rows, cols = content_box(served)
    assert (rows.stop - rows.start, cols.stop - cols.start) == (10, 30)  # shown turned: wide
    trained = np.concatenate(
        list(make_dataset([path], None, image_size=30, batch_size=1)[0].as_numpy_iterator())
    )
    embedded = np.concatenate(
        [x for _, x in indexed_dataset([path], image_size=30, batch_size=1).as_numpy_iterator()]
    )
    np.testing.assert_array_equal(trained[0], served)
    np.testing.assert_array_equal(embedded[0], served)


def bad_posters() -> dict[str, bytes | None]:
    """One of each way a poster can be broken (None: the file does not exist)."""
    jpeg = solid(40, 60, fmt="JPEG")
    png = solid(40, 60)
    return {
        "zero.jpg": b"",
        "truncated.jpg": jpeg[: len(jpeg) // 2],
        "truncated.png": png[: len(png) // 2],
        "text.jpg": b"<html>404 not found</html>\n",
        "corrupt_header.jpg": b"\xff\xd8\xff" + bytes(range(256)) * 2,
        "missing.jpg": None,
    }


@pytest.fixture
def mixed_posters(tmp_path):
    """Good posters of distinct colours (their colour is their label) with every kind of bad one mixed in."""
    bad = bad_posters()
    paths, good_positions, colours = [], [], []
    for name, data in bad.items():  # good, good, bad, good, good, bad, ...
        for _ in range(2):
            i = len(paths)
            colour = (20 * len(colours) + 5, 100, 200)
            paths.append(tmp_path / f"{i}.{'png' if i % 2 else 'jpg'}")
            paths[-1].write_bytes(solid(24 + i, 36, colour, fmt="PNG" if i % 2 else "JPEG"))
            good_positions.append(i)
            colours.append(colour)
        paths.append(tmp_path / name)
        if data is not None:
            paths[-1].write_bytes(data)
    return paths, good_positions, np.array(colours, np.float32)


def test_scan_counts_every_kind_of_bad_poster_exactly(mixed_posters):
    paths, good, _ = mixed_posters
    stats = scan_decodable(paths)
    assert stats.total == len(paths)
    assert stats.skipped == len(paths) - len(good)
    assert [i for i in range(len(paths)) if i not in stats.skipped_indices] == good
    assert stats.kept_mask().tolist() == [i in good for i in range(len(paths))]
    assert stats.to_dict() == {"total": len(paths), "kept": len(good), "skipped": len(paths) - len(good)}


def centre_colours(batch: np.ndarray) -> np.ndarray:
    half = batch.shape[1] // 2
    return batch[:, half, half, :]


def test_make_dataset_skips_bad_posters_and_keeps_labels_aligned(mixed_posters):
    paths, good, colours = mixed_posters
    labels = np.full((len(paths), 3), -1.0, np.float32)
    labels[good] = colours
    ds, stats = make_dataset(paths, labels, image_size=32, batch_size=5)
    assert stats.skipped == len(paths) - len(good)
    batches = list(ds.as_numpy_iterator())
    full, rest = divmod(len(good), 5)
    assert [len(x) for x, _ in batches] == [5] * full + ([rest] if rest else [])
    images = np.concatenate([x for x, _ in batches])
    seen_labels = np.concatenate([y for _, y in batches])
    np.testing.assert_array_equal(seen_labels, colours)  # input order, bad rows gone with their posters
    np.testing.assert_allclose(centre_colours(images), colours, atol=3)  # each image is its own poster


def test_make_dataset_without_labels_yields_images_only(mixed_posters):
    paths, good, _ = mixed_posters
    ds, _ = make_dataset(paths, None, image_size=16, batch_size=3)
    shapes = [batch.shape for batch in ds.as_numpy_iterator()]
    assert sum(s[0] for s in shapes) == len(good) and all(s[1:] == (16, 16, 3) for s in shapes)


def test_make_dataset_rejects_misaligned_labels(mixed_posters):
    paths, _, _ = mixed_posters
    with pytest.raises(ValueError, match="label rows"):
        make_dataset(paths, np.zeros((len(paths) - 1, 19)), image_size=16, batch_size=4)


def test_shuffle_is_reproducible_per_seed_and_reshuffles_each_epoch(tmp_path):
    paths = []
    for i in range(12):
        paths.append(tmp_path / f"{i}.png")
        paths[-1].write_bytes(solid(10, 10, (i * 20, 0, 0)))
    labels = np.arange(12)

    def epochs(seed, n=2):
        ds, _ = make_dataset(paths, labels, image_size=8, batch_size=5, shuffle_seed=seed)
        return [np.concatenate([y for _, y in ds.as_numpy_iterator()]).tolist() for _ in range(n)]

    first, second = epochs(7)
    assert sorted(first) == sorted(second) == labels.tolist()
    assert first != second  # reshuffled between epochs
    assert epochs(7) == [first, second]  # same seed, same sequence
    unshuffled = epochs(None)
    assert unshuffled == [labels.tolist()] * 2


def test_dataset_is_lazy_batched_and_prefetched(tmp_path):
    paths = []
    for i in range(5):
        paths.append(tmp_path / f"{i}.png")
        paths[-1].write_bytes(solid(10, 10))
    ds, stats = make_dataset(paths, None, image_size=16, batch_size=2)
    assert stats.kept == 5
    assert type(ds).__name__ == "_PrefetchDataset"  # the last stage overlaps decoding with training
    assert ds.element_spec.shape.as_list() == [None, 16, 16, 3]
    assert len(ds) == 3  # the length is known up front, so Keras knows the steps per epoch
    assert [len(batch) for batch in ds.as_numpy_iterator()] == [2, 2, 1]
    # Posters are read at iteration time, not when the dataset is built; one that vanishes after the scan
    # breaks the promised length loudly instead of silently shrinking the epoch.
    paths[0].unlink()
    with pytest.raises(tf.errors.FailedPreconditionError, match="expected to contain"):
        list(ds.as_numpy_iterator())


def test_indexed_dataset_reports_which_posters_it_kept(mixed_posters):
    paths, good, colours = mixed_posters
    batches = list(indexed_dataset(paths, image_size=16, batch_size=4).as_numpy_iterator())
    indices = np.concatenate([i for i, _ in batches])
    assert indices.tolist() == good
    np.testing.assert_allclose(centre_colours(np.concatenate([x for _, x in batches])), colours, atol=3)


def test_empty_input_gives_an_empty_dataset():
    ds, stats = make_dataset([], None, image_size=16, batch_size=4)
    assert stats == DecodeStats(0, ()) and list(ds.as_numpy_iterator()) == []


def test_pil_reference_letterboxes_like_the_pipeline(mixed_posters):
    paths, good, colours = mixed_posters
    reference = decode_resize_reference(paths, 32)
    assert reference.shape == (len(good), 32, 32, 3) and reference.dtype == np.float32
    pipeline = np.concatenate(
        list(make_dataset(paths, None, image_size=32, batch_size=8)[0].as_numpy_iterator())
    )
    np.testing.assert_allclose(centre_colours(reference), colours, atol=3)
    # Same bars: the two agree on which pixels are padding, up to a one-pixel edge from rounding.
    assert np.mean((reference.max(axis=-1) > 0) == (pipeline.max(axis=-1) > 0)) > 0.9


def test_letterbox_matches_tf_resize_with_pad_bit_for_bit():
    rng = np.random.default_rng(3)
    for i, (width, height) in enumerate([(37, 91), (91, 37), (64, 64), (300, 40), (5, 7)]):
        pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        data = encode(Image.fromarray(pixels), "PNG" if i % 2 else "JPEG")
        decoded = tf.cast(tf.io.decode_image(data, channels=3, expand_animations=False), tf.float32)
        for size in (16, 33):
            expected = tf.clip_by_value(tf.image.resize_with_pad(decoded, size, size), 0.0, 255.0)
            np.testing.assert_array_equal(load_image(data, size), expected.numpy())


def test_a_very_thin_poster_that_decodes_also_letterboxes(tmp_path):
    path = tmp_path / "thin.png"
    path.write_bytes(solid(2, 300))  # at 16 px its width would round down to zero
    assert scan_decodable([path]).skipped == 0
    ds, stats = make_dataset([path], None, image_size=16, batch_size=2)
    (image,) = np.concatenate(list(ds.as_numpy_iterator()))
    rows, cols = content_box(image)
    assert stats.kept == 1 and rows.stop - rows.start == 16 and cols.stop - cols.start == 1
