"""core.imaging on real fixture photos: every accepted format and mode, and every refusal."""

from __future__ import annotations

import io
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from core.errors import CarmorphError, ImageError
from core.imaging import MIN_SIDE, image_to_bytes, load_image


def mean_abs_diff(a: Image.Image, b: Image.Image) -> float:
    assert a.size == b.size, (a.size, b.size)
    return float(np.abs(np.asarray(a, np.int16) - np.asarray(b.convert("RGB"), np.int16)).mean())


def encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    data = image_to_bytes(image, fmt, **options)
    assert Image.open(io.BytesIO(data)).format == fmt  # the test really feeds the format it names
    return data


def grey_png(width: int, height: int) -> bytes:
    """A valid all-black 1-bit greyscale PNG, written by hand: tiny on disk whatever its pixel count."""

    def chunk(tag: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + tag + payload + struct.pack(">I", zlib.crc32(tag + payload))

    compressor = zlib.compressobj(9)
    row = b"\x00" * (1 + (width + 7) // 8)  # filter byte + packed bits
    pixels = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


# --- accepted inputs --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["bytes", "bytearray", "path", "str", "pil"])
def test_jpeg_from_every_input_kind(kind: str, car_photo_path: Path, car_photo: Image.Image) -> None:
    data = {
        "bytes": car_photo_path.read_bytes(),
        "bytearray": bytearray(car_photo_path.read_bytes()),
        "path": car_photo_path,
        "str": str(car_photo_path),
        "pil": Image.open(car_photo_path),  # lazy, not yet decoded
    }[kind]
    image = load_image(data)
    assert image.mode == "RGB"
    assert mean_abs_diff(image, car_photo) == 0.0


@pytest.mark.parametrize(
    ("fmt", "options", "tolerance"),
    [("PNG", {}, 0.0), ("WEBP", {"quality": 90}, 6.0), ("BMP", {}, 0.0), ("TIFF", {}, 0.0), ("JPEG", {}, 5.0)],
)
def test_formats(fmt: str, options: dict, tolerance: float, car_photo: Image.Image) -> None:
    image = load_image(encode(car_photo, fmt, **options))
    assert (image.mode, image.size) == ("RGB", car_photo.size)
    assert mean_abs_diff(image, car_photo) <= tolerance


@pytest.mark.parametrize("fmt", ["GIF", "WEBP", "PNG"])
def test_animated_images_give_their_first_frame(fmt: str, car_photo: Image.Image, negative_photo_path: Path) -> None:
    other = Image.open(negative_photo_path).convert("RGB").resize(car_photo.size)
    data = encode(car_photo, fmt, save_all=True, append_images=[other], duration=100, loop=0)
    assert getattr(Image.open(io.BytesIO(data)), "n_frames", 1) == 2
    image = load_image(data)
    first, second = mean_abs_diff(image, car_photo), mean_abs_diff(image, other)
    assert first < 12.0  # GIF palette quantisation, lossy WebP
    assert second > first + 20.0


@pytest.mark.parametrize(
    ("orientation", "upright", "wrong"),
    [
        (3, Image.Transpose.ROTATE_180, None),
        (6, Image.Transpose.ROTATE_270, Image.Transpose.ROTATE_90),
        (8, Image.Transpose.ROTATE_90, Image.Transpose.ROTATE_270),
    ],
)
def test_exif_orientation_is_applied(orientation: int, upright, wrong, car_photo: Image.Image) -> None:
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = encode(car_photo, "JPEG", quality=95, exif=exif.tobytes())
    image = load_image(data)
    expected = car_photo.transpose(upright)
    assert image.size == expected.size
    correct = mean_abs_diff(image, expected)
    mistaken = mean_abs_diff(image, car_photo if wrong is None else car_photo.transpose(wrong))
    assert correct < 4.0
    assert mistaken > correct + 20.0  # the photo is asymmetric enough to tell the rotations apart


def test_cmyk_jpeg(car_photo: Image.Image) -> None:
    data = encode(car_photo.convert("CMYK"), "JPEG", quality=95)
    assert Image.open(io.BytesIO(data)).mode == "CMYK"
    image = load_image(data)
    assert image.mode == "RGB"
    assert mean_abs_diff(image, car_photo) < 6.0


def test_cmyk_with_unusable_icc_profile_falls_back(car_photo: Image.Image) -> None:
    cmyk = car_photo.convert("CMYK")
    cmyk.info["icc_profile"] = b"not a profile"
    assert mean_abs_diff(load_image(cmyk), car_photo) < 3.0


def test_16_bit_png_is_scaled_not_clipped(car_photo: Image.Image) -> None:
    grey = np.asarray(car_photo.convert("L"))
    data = encode(Image.fromarray(grey.astype(np.uint16) * 257), "PNG")
    assert Image.open(io.BytesIO(data)).mode.startswith("I;16")
    image = np.asarray(load_image(data), np.int16)
    assert (image[..., 0] == image[..., 1]).all() and (image[..., 1] == image[..., 2]).all()
    assert np.abs(image[..., 0] - grey).max() <= 1  # clipping would make almost every pixel 255


@pytest.mark.parametrize("mode", ["I", "F"])
def test_32_bit_and_float_modes_are_scaled(mode: str, car_photo: Image.Image) -> None:
    grey = np.asarray(car_photo.convert("L"))
    # 32-bit integers holding 16-bit samples; floats in [0, 1]
    values = grey.astype(np.int32) * 257 if mode == "I" else grey.astype(np.float32) / 255.0
    image = load_image(Image.fromarray(values, mode=mode))
    assert np.abs(np.asarray(image, np.int16)[..., 0] - grey).max() <= 1


def test_palette_with_transparency_is_white_where_transparent(car_photo: Image.Image) -> None:
    palette_image = car_photo.convert("P", palette=Image.Palette.ADAPTIVE, colors=255)
    indices = np.asarray(palette_image).copy()
    indices[:20, :30] = 255  # a corner made transparent; its palette entry is black
    transparent = Image.fromarray(indices, mode="P")
    transparent.putpalette([*palette_image.getpalette()[: 255 * 3], 0, 0, 0])
    data = encode(transparent, "PNG", transparency=255)
    image = np.asarray(load_image(data))
    assert (image[:20, :30] == 255).all()
    opaque = np.asarray(palette_image.convert("RGB"))
    assert np.array_equal(image[20:], opaque[20:])


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_alpha_is_composited_on_white(mode: str, car_photo: Image.Image) -> None:
    base = car_photo.convert(mode[:-1])
    colour = np.asarray(base).copy()
    alpha = np.full(colour.shape[:2], 255, np.uint8)
    alpha[:20, :30] = 0  # fully transparent black corner -> white
    alpha[-20:, -30:] = 128  # half transparent black corner -> mid grey
    colour[:20, :30] = 0
    colour[-20:, -30:] = 0
    image = load_image(encode(Image.merge(mode, [*Image.fromarray(colour).split(), Image.fromarray(alpha)]), "PNG"))
    pixels = np.asarray(image, np.int16)
    assert (pixels[:20, :30] == 255).all()
    assert (np.abs(pixels[-20:, -30:] - 127) <= 1).all()
    middle = (0, 20, image.width, image.height - 20)  # fully opaque rows
    assert mean_abs_diff(image.crop(middle), base.crop(middle)) < 1.0


def test_greyscale_jpeg(car_photo: Image.Image) -> None:
    grey = car_photo.convert("L")
    image = np.asarray(load_image(encode(grey, "JPEG", quality=95)), np.int16)
    assert (image[..., 0] == image[..., 2]).all()
    assert np.abs(image[..., 0] - np.asarray(grey, np.int16)).mean() < 3.0


@pytest.mark.parametrize("mode", ["1", "L", "P", "YCbCr", "HSV", "RGBX"])
def test_other_modes_become_rgb(mode: str, car_photo: Image.Image) -> None:
    source = car_photo.convert(mode)
    image = load_image(source)
    assert (image.mode, image.size) == ("RGB", car_photo.size)
    assert mean_abs_diff(image, source.convert("RGB")) == 0.0


def test_smallest_accepted_size(car_photo: Image.Image) -> None:
    assert load_image(car_photo.resize((MIN_SIDE, MIN_SIDE))).size == (MIN_SIDE, MIN_SIDE)


def test_hand_made_png_writer_makes_valid_pngs() -> None:
    """The helper behind the decompression-bomb tests writes real PNGs (so their refusal is about size)."""
    image = load_image(grey_png(64, 48))
    assert image.size == (64, 48)
    assert not np.asarray(image).any()


# --- refusals --------------------------------------------------------------------------------------------------


def refusal(data: object, **kwargs: object) -> str:
    with pytest.raises(ImageError) as caught:
        load_image(data, **kwargs)
    assert isinstance(caught.value, CarmorphError)
    return str(caught.value)


@pytest.mark.parametrize("empty", [b"", bytearray(), memoryview(b"")])
def test_empty_input(empty: bytes) -> None:
    assert "empty" in refusal(empty)


def test_text_renamed_as_jpeg(tmp_path: Path) -> None:
    path = tmp_path / "photo.jpg"
    path.write_text("Dear team,\nthis is a meeting note saved with the wrong extension.\n")
    message = refusal(path)
    assert "text, not an image" in message
    assert "JPEG, PNG" in message


def test_binary_non_image() -> None:
    data = zlib.compress(bytes(range(256)) * 8)
    assert "not an image" in refusal(data)


def test_format_outside_the_allow_list(car_photo: Image.Image) -> None:
    data = encode(car_photo, "PCX")
    assert Image.open(io.BytesIO(data)).size == car_photo.size  # Pillow could decode it; we choose not to
    assert "not an image that carmorph can read" in refusal(data)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated_file(fmt: str, car_photo: Image.Image) -> None:
    data = encode(car_photo, fmt)
    assert "truncated" in refusal(data[: len(data) // 2])


def test_too_small() -> None:
    tiny = Image.new("RGB", (8, 8), "red")
    assert "too small to find a car" in refusal(image_to_bytes(tiny))
    assert "too small" in refusal(tiny)


def test_missing_file(tmp_path: Path) -> None:
    assert "No image file" in refusal(tmp_path / "absent.jpg")


def test_not_an_input_type() -> None:
    with pytest.raises(TypeError):
        load_image(42)  # type: ignore[arg-type]


@pytest.fixture
def decode_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """Records every pixel decode (ImageFile.load), to prove refusals happen before decoding."""
    calls: list[tuple[int, int]] = []
    original = ImageFile.ImageFile.load

    def recording_load(self: ImageFile.ImageFile):  # type: ignore[no-untyped-def]
        calls.append(self.size)
        return original(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", recording_load)
    return calls


def test_decompression_bomb_refused_before_decoding(decode_calls: list) -> None:
    data = grey_png(30_000, 30_000)  # 900 megapixels in about 100 kB
    assert len(data) < 200_000
    message = refusal(data)
    assert "limit of 50.0 megapixels" in message and "Scale it down" in message
    assert decode_calls == []


def test_over_the_default_limit_refused_before_decoding(decode_calls: list) -> None:
    message = refusal(grey_png(8_000, 8_000))  # 64 MP: under Pillow's own limit, over carmorph's 50 MP default
    assert "64.0 megapixels" in message and "limit of 50.0" in message
    assert decode_calls == []


def test_pillows_own_bomb_warning_does_not_escape() -> None:
    data = grey_png(10_000, 10_000)  # 100 MP: over Pillow's warning level (89 MP), under its error level
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a DecompressionBombWarning would now raise instead of our ImageError
        assert "100.0 megapixels" in refusal(data)


def test_pixel_limit_from_argument_and_environment(
    car_photo_path: Path, car_photo: Image.Image, monkeypatch: pytest.MonkeyPatch
) -> None:
    pixels = car_photo.width * car_photo.height
    assert "more than the limit" in refusal(car_photo_path.read_bytes(), max_pixels=pixels - 1)
    assert load_image(car_photo_path.read_bytes(), max_pixels=pixels).size == car_photo.size
    monkeypatch.setenv("CARMORPH_MAX_PIXELS", str(pixels - 1))
    assert "more than the limit" in refusal(car_photo_path.read_bytes())
    assert "more than the limit" in refusal(car_photo)
