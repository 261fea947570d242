"""Image intake: decode and validate an upload into an 8-bit RGB `PIL.Image`, or refuse it with an `ImageError`.

`load_image` is the only door for user images. It reads the header first and refuses images whose pixel count
exceeds the limit *before* any pixel is decoded (decompression bombs), decodes only an allow-list of formats,
takes the first frame of animated images, applies the EXIF orientation and converts every mode to RGB
(16-bit and float images are scaled, not clipped; transparency is composited on white). Every failure is an
`ImageError` whose message says what to do; no raw PIL or OS exception escapes.
"""

from __future__ import annotations

import io
import logging
import warnings
from pathlib import Path

import numpy as np
from PIL import ExifTags, Image, ImageCms, ImageOps

from core.config import max_pixels as configured_max_pixels
from core.errors import ImageError

logger = logging.getLogger(__name__)

# Decoders we allow (Pillow format names); anything else is refused unread. Pillow's JPEG opener also returns the
# multi-picture JPEGs (MPO) many cameras write. Animated PNG and WebP open through PNG and WEBP.
ALLOWED_FORMATS: tuple[str, ...] = ("JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF")
FORMAT_HINT = "a JPEG, PNG, WebP, BMP, GIF or TIFF photo"
# Below this many pixels on a side there is nothing for the networks to see.
MIN_SIDE = 32

ImageInput = bytes | bytearray | memoryview | Image.Image | str | Path


def load_image(data: ImageInput, max_pixels: int | None = None, min_side: int = MIN_SIDE) -> Image.Image:
    """Decode `data` (encoded bytes, a path, or a PIL image) into an oriented 8-bit RGB image.

    `max_pixels` defaults to `core.config.max_pixels()` ($CARMORPH_MAX_PIXELS). Raises `ImageError` for empty
    input, non-images, unsupported formats, truncated or damaged files, and images too large or too small.
    """
    limit = configured_max_pixels(max_pixels)
    image = data if isinstance(data, Image.Image) else open_image_header(read_input(data))
    check_size(image.size, limit, min_side)
    decode_first_frame(image)
    try:
        return to_rgb(apply_exif_orientation(image))
    except ImageError:
        raise
    except Exception as error:  # a conversion failure is still the image's fault, not a crash
        raise ImageError(
            f"The image could not be converted to RGB ({error}). Re-save it as an RGB JPEG or PNG and retry."
        ) from error


def read_input(data: bytes | bytearray | memoryview | str | Path) -> bytes:
    """The encoded bytes of `data` (read from disk for a path); empty input is refused."""
    if isinstance(data, str | Path):
        path = Path(data)
        try:
            data = path.read_bytes()
        except FileNotFoundError as error:
            raise ImageError(f"No image file at {path}: check the path.") from error
        except OSError as error:
            reason = error.strerror or error
            raise ImageError(f"Cannot read {path} ({reason}): check that it is a readable image file.") from error
    elif not isinstance(data, bytes | bytearray | memoryview):
        raise TypeError(f"load_image takes bytes, a path or a PIL image, not {type(data).__name__}")
    data = bytes(data)
    if not data:
        raise ImageError(f"The file is empty (0 bytes). Upload {FORMAT_HINT}.")
    return data


def open_image_header(data: bytes) -> Image.Image:
    """Open lazily: Pillow reads only the header (format, mode, size); pixels are decoded later."""
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            image = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
    except Image.DecompressionBombError as error:
        raise too_many_pixels_error(configured_max_pixels()) from error
    except Exception as error:  # Pillow raises many types (OSError, SyntaxError, ValueError, ...)
        raise not_an_image_error(data, error) from error
    for warning in caught:
        # A DecompressionBombWarning is Pillow's own (fixed) limit; ours is checked next, from the header size.
        logger.debug("Pillow warning while opening an image: %s", warning.message)
    return image


def too_many_pixels_error(max_pixels: int) -> ImageError:
    return ImageError(
        f"The image has far more pixels than the limit of {max_pixels / 1e6:.1f} megapixels (a possible "
        "decompression bomb), so it was not decoded. Scale it down (a few megapixels is plenty) and retry."
    )


def not_an_image_error(data: bytes, error: Exception) -> ImageError:
    if looks_like_text(data):
        return ImageError(f"This file holds text, not an image (a renamed file?). Upload {FORMAT_HINT}.")
    return ImageError(
        f"This file is not an image that carmorph can read, or its header is damaged ({error}). Upload {FORMAT_HINT}."
    )


def looks_like_text(data: bytes, probe: int = 1024) -> bool:
    head = data[:probe]
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        # The probe may cut a multi-byte character at its end; retry without the last 3 bytes.
        try:
            text = head[:-3].decode("utf-8")
        except UnicodeDecodeError:
            return False
    return all(char.isprintable() or char in "\t\r\n\f" for char in text)


def check_size(size: tuple[int, int], max_pixels: int, min_side: int) -> None:
    """Refuse images over `max_pixels` (decompression bombs) or under `min_side` px on a side, from the header."""
    width, height = size
    if width * height > max_pixels:
        raise ImageError(
            f"The image is {width} x {height} = {width * height / 1e6:.1f} megapixels, more than the limit of "
            f"{max_pixels / 1e6:.1f} megapixels. Scale it down (a few megapixels is plenty) and retry."
        )
    if min(width, height) < min_side:
        raise ImageError(
            f"The image is {width} x {height} pixels: too small to find a car. "
            f"Use a photo at least {min_side} pixels on each side (a few hundred is better)."
        )


def decode_first_frame(image: Image.Image) -> None:
    """Decode the pixels of the first frame in place; damaged or truncated data becomes an `ImageError`."""
    try:
        if getattr(image, "n_frames", 1) > 1:
            image.seek(0)
        image.load()
    except Image.DecompressionBombError as error:
        raise too_many_pixels_error(configured_max_pixels()) from error
    except MemoryError as error:
        raise ImageError("The image is too large to decode in memory. Scale it down and retry.") from error
    except Exception as error:  # OSError, SyntaxError, EOFError, ValueError, struct.error ...
        raise ImageError(
            f"The image could not be decoded: the file is truncated or damaged ({error}). "
            "Upload the complete file again, or re-save it as JPEG or PNG."
        ) from error


def apply_exif_orientation(image: Image.Image) -> Image.Image:
    """Rotate/flip as the EXIF Orientation tag says; unreadable EXIF is ignored (the photo stays as stored)."""
    try:
        orientation = image.getexif().get(ExifTags.Base.Orientation, 1)
        if orientation in (2, 3, 4, 5, 6, 7, 8):
            return ImageOps.exif_transpose(image)
    except Exception as error:  # corrupt EXIF must not block an otherwise good photo
        logger.info("Ignoring unreadable EXIF orientation: %s", error)
    return image


def to_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB from any Pillow mode: 16-bit/32-bit/float scaled to 0-255, alpha composited on white."""
    mode = image.mode
    if mode == "RGB" and "transparency" not in image.info:
        return image
    if mode.startswith("I") or mode == "F":
        return Image.fromarray(scale_to_uint8(np.asarray(image), mode), mode="L").convert("RGB")
    if has_transparency(image):
        return composite_on_white(image)
    if mode == "CMYK" and image.info.get("icc_profile"):
        converted = convert_with_icc(image)
        if converted is not None:
            return converted
    if mode == "LAB":
        return ImageCms.applyTransform(image, lab_to_srgb_transform())
    return image.convert("RGB")


def has_transparency(image: Image.Image) -> bool:
    return image.mode in ("RGBA", "RGBa", "LA", "La", "PA") or "transparency" in image.info


def composite_on_white(image: Image.Image) -> Image.Image:
    if image.mode == "La":
        image = image.convert("LA")
    rgba = image.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def scale_to_uint8(values: np.ndarray, mode: str) -> np.ndarray:
    """Map integer or float samples to 0-255.

    16-bit modes ("I;16*") are divided by 257 (the full 16-bit range). For "I" (32-bit) the range decides:
    0-255 is kept, 0-65535 is treated as 16-bit, anything else is stretched min-max. For "F", 0-1 is scaled by
    255, 0-255 is kept, anything else is stretched min-max. NaNs become 0.
    """
    data = np.nan_to_num(values.astype(np.float64))
    if mode.startswith("I;16"):
        return np.round(data / 257.0).astype(np.uint8)
    low, high = (float(data.min()), float(data.max())) if data.size else (0.0, 0.0)
    if mode == "F" and low >= 0.0 and high <= 1.0:
        data = data * 255.0
    elif low >= 0.0 and high <= 255.0:
        pass
    elif mode.startswith("I") and low >= 0.0 and high <= 65535.0:
        data = data / 257.0
    else:
        data = (data - low) * (255.0 / (high - low)) if high > low else np.zeros_like(data)
    return np.clip(np.round(data), 0, 255).astype(np.uint8)


def convert_with_icc(image: Image.Image) -> Image.Image | None:
    """Colour-manage a CMYK image with its embedded ICC profile into sRGB; None when the profile is unusable."""
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(image.info["icc_profile"]))
        return ImageCms.profileToProfile(image, source, ImageCms.createProfile("sRGB"), outputMode="RGB")
    except Exception as error:  # fall back to Pillow's plain conversion
        logger.info("Ignoring unusable ICC profile: %s", error)
        return None


def lab_to_srgb_transform() -> ImageCms.ImageCmsTransform:
    return ImageCms.buildTransform(ImageCms.createProfile("LAB"), ImageCms.createProfile("sRGB"), "LAB", "RGB")


def image_to_bytes(image: Image.Image, format: str = "PNG", **save_options: object) -> bytes:
    """Encode an image (e.g. for download buttons or tests); PNG by default."""
    buffer = io.BytesIO()
    image.save(buffer, format=format, **save_options)
    return buffer.getvalue()


SHARPNESS_SIZE = 224  # px: the networks' input size, so a photo's own resolution counts as it does for them


def sharpness(image: Image.Image) -> float:
    """Variance of the 4-neighbour Laplacian of the image in grey at SHARPNESS_SIZE x SHARPNESS_SIZE: small for an
    out-of-focus photo or one enlarged from a few pixels."""
    size = (SHARPNESS_SIZE, SHARPNESS_SIZE)
    grey = np.asarray(image.convert("L").resize(size, Image.Resampling.BICUBIC), np.float32)
    centre = grey[1:-1, 1:-1]
    laplacian = 4 * centre - grey[:-2, 1:-1] - grey[2:, 1:-1] - grey[1:-1, :-2] - grey[1:-1, 2:]
    return float(laplacian.var())
