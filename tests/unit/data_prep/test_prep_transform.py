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


# -- issue #17: PNG compression levels and the opt-in fast mode ----------------------------------
def _photos(count=6, seed=1):
    """Natural JPEG photos (scikit-learn's bundled samples, no download) at varied sizes."""
    from sklearn.datasets import load_sample_images

    photos = load_sample_images().images
    rng = np.random.default_rng(seed)
    out = []
    for k in range(count):
        width, height = (int(v) for v in rng.integers(300, 701, 2))
        img = Image.fromarray(photos[k % len(photos)]).resize((width, height), Image.BICUBIC)
        out.append(save(img, "JPEG", quality=90))
    return out


def _pixels(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img)


@pytest.mark.parametrize("shape", [(17, 23, 3), (9, 31), (1, 1, 3), (64, 64, 3)])
def test_png_levels_round_trip_exactly(shape):
    from data_prep.png import encode_png

    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, shape, dtype=np.uint8)
    smooth = np.cumsum(rng.integers(0, 3, shape), axis=0).astype(np.uint8)  # wraps: edge cases
    for pixels in (noise, smooth):
        sizes = []
        for level in range(10):
            data = encode_png(pixels, level)
            with Image.open(io.BytesIO(data)) as img:
                assert img.mode == ("RGB" if len(shape) == 3 else "L")
                assert np.array_equal(np.asarray(img), pixels), level
            sizes.append(len(data))
        if pixels is smooth and shape == (64, 64, 3):
            assert sizes[1] < sizes[0] / 2 and sizes[9] < sizes[0] / 2  # the levels compress
    assert encode_png(noise, 1) == encode_png(noise.copy(), 1)  # deterministic bytes


def test_png_level_is_a_prep_option_that_never_changes_pixels():
    assert cfg("x").png_compress_level == 1
    data = _photos(1)[0]
    outputs = {
        lvl: prepare_image(data, cfg("x", resolution=32, png_compress_level=lvl))[0]
        for lvl in (0, 1, 6, 9)
    }
    reference = _pixels(outputs[0])
    assert all(np.array_equal(_pixels(o), reference) for o in outputs.values())
    assert len(outputs[0]) > len(outputs[1]) >= len(outputs[9])
    # the pixels are the exact crop + Lanczos resize, whatever the level
    exact = crop_resize(decode(data, 10**9), 32, "center-crop", "lanczos")
    assert np.array_equal(np.asarray(exact), reference)
    with pytest.raises(ValueError, match="png_compress_level"):
        cfg("x", png_compress_level=10)


FAST_MEAN_ABS_DIFF = 4.0
"""Documented bound (docs/benchmarks.md): fast mode's mean |difference| per photo, in 0..255."""
FAST_MIN_PSNR = 35.0


@pytest.mark.parametrize("resolution,transform", [(32, "center-crop"), (64, "center-crop-wide")])
def test_fast_mode_is_close_to_exact_and_never_the_default(resolution, transform):
    assert cfg("x").fast is False and cfg("x").png_compress_level == 1
    differ, squared = 0, []
    for data in _photos():
        exact, exact_size = prepare_image(
            data, cfg("x", resolution=resolution, transform=transform)
        )
        fast, fast_size = prepare_image(
            data, cfg("x", resolution=resolution, transform=transform, fast=True)
        )
        assert fast_size == exact_size  # the original size is reported, not the reduced decode
        a, b = _pixels(exact).astype(np.float64), _pixels(fast).astype(np.float64)
        assert a.shape == b.shape == (resolution, resolution, 3)
        assert np.abs(a - b).mean() <= FAST_MEAN_ABS_DIFF
        squared.append(((a - b) ** 2).mean())
        differ += not np.array_equal(a, b)
    assert differ == len(squared)  # fast mode really took the reduced path
    assert 10 * np.log10(255**2 / np.mean(squared)) >= FAST_MIN_PSNR


def test_fast_mode_keeps_exif_orientation_and_handles_png_inputs():
    img = Image.new("RGB", (640, 320), (0, 0, 0))
    img.paste((255, 255, 255), (160, 0, 320, 320))  # left half of the central square is white
    exif = Image.Exif()
    exif[0x0112] = 6  # displayed rotated 90 CW: white ends up in the top half
    data = save(img, "JPEG", exif=exif, quality=95)
    exact = _pixels(prepare_image(data, cfg("x", resolution=16))[0]).astype(int)
    fast = _pixels(prepare_image(data, cfg("x", resolution=16, fast=True))[0]).astype(int)
    assert exact[2, 8].min() > 200 and exact[13, 8].max() < 50
    assert np.abs(exact - fast).mean() <= FAST_MEAN_ABS_DIFF
    # PNG: no draft, only the reducing gap and the uncropped box (edge pixels see outside it)
    png = save(img, "PNG")
    fast = _pixels(prepare_image(png, cfg("x", resolution=16, fast=True))[0]).astype(int)
    assert np.abs(fast - _pixels(prepare_image(png, cfg("x", resolution=16))[0])).mean() <= (
        FAST_MEAN_ABS_DIFF
    )
