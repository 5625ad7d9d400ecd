"""Every common format and colour mode becomes a correct RGB/L image; geometry and skips."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from prep_helpers import cfg, image_bytes

from data_prep.skips import SkipInput
from data_prep.transform import crop_resize, decode, prepare_image, to_channels


def rgb_of(data: bytes, **kw) -> np.ndarray:
    out, _ = prepare_image(data, cfg("x", **kw))
    with Image.open(io.BytesIO(out)) as img:
        return np.asarray(img)


def save(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF"])
def test_formats(fmt):
    out = rgb_of(image_bytes((20, 16), fmt=fmt), resolution=8)
    assert out.shape == (8, 8, 3) and out.dtype == np.uint8


def test_gif_uses_the_first_frame():
    red, blue = Image.new("RGB", (8, 8), (255, 0, 0)), Image.new("RGB", (8, 8), (0, 0, 255))
    data = save(red, "GIF", save_all=True, append_images=[blue])
    assert tuple(rgb_of(data)[4, 4]) == (255, 0, 0)


@pytest.mark.parametrize("mode", ["L", "LA", "RGB", "RGBA", "P", "CMYK", "1", "I", "F", "I;16"])
def test_modes_become_rgb_and_gray(mode):
    gray = Image.fromarray(np.full((8, 8), 200, np.uint8), "L")
    if mode == "I;16":
        img = Image.fromarray(np.full((8, 8), 200 * 257, np.uint16))
        assert img.mode == "I;16"
    elif mode == "I":
        img = Image.fromarray(np.full((8, 8), 200 * 257, np.int32), "I")
    elif mode == "F":
        img = Image.fromarray(np.full((8, 8), 200 / 255, np.float32), "F")
    elif mode == "1":
        img = Image.fromarray(np.ones((8, 8), bool))
    else:
        img = gray.convert(mode)
    expected = 255 if mode == "1" else 200
    fmt = {"CMYK": "JPEG", "F": "TIFF", "I": "TIFF"}.get(mode, "PNG")
    data = save(img, fmt)
    rgb = rgb_of(data)
    assert rgb.shape == (8, 8, 3) and np.allclose(rgb, expected, atol=2), (mode, rgb[0, 0])
    gray_out = rgb_of(data, channels=1)
    assert gray_out.shape == (8, 8) and np.allclose(gray_out, expected, atol=2)


def test_sixteen_bit_is_scaled_not_clipped():
    ramp = np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000
    out = np.asarray(to_channels(Image.fromarray(ramp), 1))
    assert out.max() == round(63000 / 257) and out.min() == 0


def test_alpha_composites_onto_white():
    rgba = Image.new("RGBA", (8, 8), (0, 0, 0, 0))  # fully transparent black
    assert tuple(rgb_of(save(rgba, "PNG"))[0, 0]) == (255, 255, 255)
    pal = Image.new("P", (8, 8), 0)
    pal.putpalette([0, 0, 0] * 256)
    pal.info["transparency"] = 0
    assert tuple(rgb_of(save(pal, "PNG", transparency=0))[0, 0]) == (255, 255, 255)


def test_exif_orientation_is_applied():
    img = Image.new("RGB", (16, 8), (0, 0, 0))
    img.paste((255, 255, 255), (0, 0, 8, 8))  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW when displayed: the white half ends up on top
    data = save(img, "JPEG", exif=exif, quality=100)
    upright = decode(data, 10**9)
    assert upright.size == (8, 16)
    assert (
        np.asarray(upright.convert("L"))[2, 4] > 200
        and np.asarray(upright.convert("L"))[13, 4] < 50
    )


def test_center_crop_and_wide_and_none():
    img = Image.new("RGB", (40, 20), (10, 20, 30))
    img.paste((250, 250, 250), (10, 0, 30, 20))  # central 20x20 square is white
    assert np.asarray(crop_resize(img, 8, "center-crop", "box")).min() == 250
    wide = np.asarray(crop_resize(img, 8, "center-crop-wide", "box"))
    assert wide.shape == (8, 8, 3) and wide[:2].max() == 0 and wide[-2:].max() == 0  # black bars
    assert wide[4, 4].tolist() == [250, 250, 250]
    with pytest.raises(SkipInput) as err:
        prepare_image(save(img, "PNG"), cfg("x", transform="none"))
    assert err.value.reason == "wrong-size"
    exact = save(Image.new("RGB", (8, 8), (1, 2, 3)), "PNG")
    assert rgb_of(exact, transform="none")[0, 0].tolist() == [1, 2, 3]


@pytest.mark.parametrize("fmt,lossless", [("png", True), ("webp", True), ("jpeg", False)])
def test_output_encodings(fmt, lossless):
    arr = np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    out, size = prepare_image(
        arr, cfg("x", image_format=fmt, jpeg_quality=90), exempt_min_size=True
    )
    with Image.open(io.BytesIO(out)) as img:
        assert img.format == {"png": "PNG", "webp": "WEBP", "jpeg": "JPEG"}[fmt]
        assert np.array_equal(np.asarray(img.convert("RGB")), arr) == lossless
    assert size == (8, 8)


@pytest.mark.parametrize(
    "data,reason",
    [
        (b"", "empty"),
        (b"hello, I am a text file", "not-an-image"),
        (image_bytes((16, 16))[:60], "truncated"),
        (image_bytes((3, 3)), "too-small"),  # min_size: 32 / 8 = 4
    ],
)
def test_bad_inputs_raise_skip(data, reason):
    with pytest.raises(SkipInput) as err:
        prepare_image(data, cfg("x", resolution=32))
    assert err.value.reason == reason


def test_decompression_bomb_is_skipped_before_decoding():
    data = image_bytes((64, 64))
    with pytest.raises(SkipInput) as err:
        prepare_image(data, cfg("x", max_image_pixels=1000))
    assert err.value.reason == "decompression-bomb"
