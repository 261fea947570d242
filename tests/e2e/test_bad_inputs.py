"""Whatever file a user has, the Score page answers with a score or a clear message, never a traceback, and the
next upload works. Every bad input is made here from the fixture photos, in a temporary folder.

The accept server's bundle lets every decodable photo through the gate, so "score" below means the image was
decoded, converted and scored; "message" means a CarmorphError's text or the uploader's own limit was shown.
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from e2e_app import UPLOAD_INPUT, AppPage, StreamlitServer
from PIL import Image

pytestmark = pytest.mark.e2e

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
EXIF_ORIENTATION = 0x0112
ROTATE_90_CW = 6  # the stored pixels must turn 90° clockwise to be seen upright
UPLOAD_LIMIT_MB = 25


@dataclass(frozen=True)
class Photos:
    car: Path
    other_car: Path
    rear: Path
    negative: Path

    def car_image(self) -> Image.Image:
        with Image.open(self.car) as image:
            return image.convert("RGB")


@pytest.fixture(scope="module")
def photos(fixture_rows: dict[str, list[dict[str, str]]], negative_photo_path: Path) -> Photos:
    cars = fixture_rows["stanford_cars"]
    rear = next(row for row in fixture_rows["epfl_multiview"] if abs(float(row["angle_deg"])) > 170)
    return Photos(Path(cars[8]["path"]), Path(cars[3]["path"]), Path(rear["path"]), negative_photo_path)


# ----------------------------------------------------------------------------------------------- makers


def encoded(image: Image.Image, format: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format, **options)
    return buffer.getvalue()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def blank_bilevel_png(width: int, height: int) -> bytes:
    """A 1-bit greyscale PNG of zeros written chunk by chunk: a few hundred KB on disk for any pixel count."""
    row = b"\x00" * (1 + (width + 7) // 8)  # filter byte + packed bits
    compressor = zlib.compressobj(9)
    block = row * 1000
    data = b"".join(compressor.compress(block) for _ in range(height // 1000))
    data += compressor.compress(row * (height % 1000)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return PNG_SIGNATURE + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", data) + png_chunk(b"IEND", b"")


def side_by_side(first: Image.Image, second: Image.Image) -> Image.Image:
    height = min(first.height, second.height)
    left = first.resize((round(first.width * height / first.height), height))
    right = second.resize((round(second.width * height / second.height), height))
    canvas = Image.new("RGB", (left.width + right.width + 16, height), (255, 255, 255))
    canvas.paste(left, (0, 0))
    canvas.paste(right, (left.width + 16, 0))
    return canvas


def transparent(image: Image.Image) -> Image.Image:
    """Alpha falling from opaque in the middle to clear at the edges."""
    rgba = image.convert("RGBA")
    ys, xs = np.mgrid[0 : rgba.height, 0 : rgba.width]
    distance = np.maximum(abs(xs / rgba.width - 0.5), abs(ys / rgba.height - 0.5)) * 2
    rgba.putalpha(Image.fromarray((255 * np.clip(1.4 - distance * 1.4, 0, 1)).astype(np.uint8)))
    return rgba


def sixteen_bit(image: Image.Image) -> Image.Image:
    return Image.fromarray(np.asarray(image.convert("L"), dtype=np.uint16) * 257)


def exif_rotated(image: Image.Image) -> bytes:
    """The photo stored turned on its side (portrait) with EXIF saying to turn it back (landscape)."""
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = ROTATE_90_CW
    return encoded(image.rotate(90, expand=True), "JPEG", exif=exif.tobytes(), quality=90)


def animated(photos: Photos) -> bytes:
    """Two frames, the car first (the one that is scored), then the rear view."""
    first = photos.car_image()
    second = Image.open(photos.rear).convert("RGB").resize(first.size)
    return encoded(first, "GIF", save_all=True, append_images=[second], duration=200, loop=0)


# name -> (file name, bytes from the photos); expected: a score, or a message containing the given words.
Maker = Callable[[Photos], bytes]
SCORE = "score"
BAD_INPUTS: dict[str, tuple[str, Maker, str]] = {
    "empty-file": ("empty.jpg", lambda p: b"", "file is empty"),
    "truncated-jpeg": ("truncated.jpg", lambda p: p.car.read_bytes()[: p.car.stat().st_size // 2], "truncated"),
    "text-renamed-jpg": ("notes.jpg", lambda p: b"Shopping list:\n- tyres\n- wipers\n" * 20, "holds text"),
    "decompression-bomb-30000x30000-png": ("bomb.png", lambda p: blank_bilevel_png(30_000, 30_000), "pixels"),
    "over-50-megapixels-png": ("large.png", lambda p: blank_bilevel_png(8_000, 8_000), "limit of 50.0 megapixels"),
    "tiny-8x8": ("tiny.png", lambda p: encoded(p.car_image().resize((8, 8)), "PNG"), "too small"),
    "cmyk-jpeg": ("cmyk.jpg", lambda p: encoded(p.car_image().convert("CMYK"), "JPEG"), SCORE),
    "16-bit-png": ("deep.png", lambda p: encoded(sixteen_bit(p.car_image()), "PNG"), SCORE),
    "transparent-png": ("alpha.png", lambda p: encoded(transparent(p.car_image()), "PNG"), SCORE),
    "animated-gif": ("animated.gif", animated, SCORE),
    "exif-rotated-jpeg": ("rotated.jpg", lambda p: exif_rotated(p.car_image()), SCORE),
    "several-cars": (
        "two-cars.jpg",
        lambda p: encoded(side_by_side(p.car_image(), Image.open(p.other_car).convert("RGB")), "JPEG"),
        SCORE,
    ),
    "rear-view": ("rear.jpg", lambda p: p.rear.read_bytes(), SCORE),
}


def write_input(directory: Path, name: str, data: bytes) -> Path:
    path = directory / name
    path.write_bytes(data)
    return path


def expect_next_upload_works(app: AppPage, photos: Photos) -> None:
    app.screenshot("bad-input")
    app.expect_scored(app.upload(photos.car))


# ------------------------------------------------------------------------------------------------- tests


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_gets_a_score_or_a_clear_message(
    open_app: Callable[..., AppPage], accept_server: StreamlitServer, photos: Photos, tmp_path: Path, case: str
) -> None:
    file_name, make, expected = BAD_INPUTS[case]
    path = write_input(tmp_path, file_name, make(photos))
    app = open_app(accept_server)
    shown = app.upload(path)
    app.expect(not shown.exceptions, f"{case}: the page shows a traceback: {shown.exceptions}")
    if expected == SCORE:
        app.expect_scored(shown)
    else:
        app.expect(not shown.scored, f"{case}: scored although it should be refused")
        app.expect(
            len(shown.errors) == 1 and expected in shown.errors[0],
            f"{case}: expected one error saying {expected!r}, got {shown.messages}",
        )
    if case == "exif-rotated-jpeg":
        width, height = app.image_sizes()[0]
        app.expect(width > height, f"the photo is shown as stored ({width} x {height}), not turned upright")
    expect_next_upload_works(app, photos)


def test_a_file_over_the_upload_limit_is_refused_by_the_uploader(
    open_app: Callable[..., AppPage], accept_server: StreamlitServer, photos: Photos, tmp_path: Path
) -> None:
    path = write_input(tmp_path, "huge.jpg", b"\xff\xd8\xff\xe0" + os.urandom((UPLOAD_LIMIT_MB + 1) * 1_000_000))
    app = open_app(accept_server)
    app.page.locator(UPLOAD_INPUT).first.set_input_files(str(path))
    app.expect_text(f"File must be {UPLOAD_LIMIT_MB:.1f}MB or smaller")
    app.expect_no_traceback()
    app.expect(not app.has_heading("How modern"), "an over-size file was scored")
    path.unlink()
    expect_next_upload_works(app, photos)
