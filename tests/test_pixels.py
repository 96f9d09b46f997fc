"""The NumPy poster path gives the tf.data pipeline's pixels: decode, EXIF orientation and letterbox."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from postergenre.pixels import decode_poster, letterbox_array, poster_batch

SHAPES = [(300, 200), (200, 300), (64, 64), (1000, 37), (37, 1000), (97, 131), (10, 500)]


def _image(height: int, width: int, seed: int, fmt: str = "PNG", orientation: int = 1) -> bytes:
    rng = np.random.default_rng(seed)
    pixels = (rng.random((height, width, 3)) * 255).astype(np.uint8)
    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, fmt, exif=exif.tobytes(), **({"quality": 90} if fmt == "JPEG" else {}))
    return buf.getvalue()


@pytest.mark.parametrize("image_size", [32, 96, 224])
@pytest.mark.parametrize(("height", "width"), SHAPES)
def test_letterbox_matches_the_tf_pipeline(height, width, image_size):
    import tensorflow as tf

    from postergenre.images import letterbox

    data = _image(height, width, seed=height * width)
    expected = letterbox(tf.constant(data), image_size).numpy()
    got = letterbox_array(decode_poster(data, 10**8), image_size)
    assert got.shape == expected.shape == (image_size, image_size, 3)
    # A lossless decode and TF's own resize arithmetic (float32, half-pixel centres): the same pixels.
    np.testing.assert_array_equal(got, expected)


def test_jpeg_decoders_differ_only_in_chroma_upsampling():
    """PIL's and TensorFlow's libjpeg builds upsample chroma slightly differently: a few levels of 255 on
    noise, what the artefact check's tolerance allows for."""
    import tensorflow as tf

    from postergenre.images import letterbox

    data = _image(300, 200, seed=1, fmt="JPEG")
    diff = np.abs(letterbox(tf.constant(data), 96).numpy() - letterbox_array(decode_poster(data, 10**8), 96))
    assert diff.max() <= 8 and diff.mean() < 1.0


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied_as_the_pipeline_does(orientation):
    import tensorflow as tf

    from postergenre.images import letterbox

    data = _image(120, 80, seed=orientation, orientation=orientation)
    expected = letterbox(tf.constant(data), 64, orientation).numpy()
    np.testing.assert_array_equal(letterbox_array(decode_poster(data, 10**8), 64), expected)


def test_bad_or_oversized_posters_are_refused_before_decoding():
    with pytest.raises(ValueError, match="not a decodable image"):
        decode_poster(b"this is text", 10**8)
    with pytest.raises(ValueError, match="not a decodable image"):
        decode_poster(_image(50, 50, 0, "JPEG")[:100], 10**8)
    with pytest.raises(ValueError, match="over the cap"):
        decode_poster(_image(50, 50, 0), 2499)
    assert poster_batch([_image(50, 40, 1), _image(30, 60, 2, "JPEG")], 48, 10**8).shape == (2, 48, 48, 3)
