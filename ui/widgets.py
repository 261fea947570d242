"""Pictures, galleries and figures for the pages: thumbnails from the bundle's atlas, full-size photos from the
image root, placeholders for anything missing (never an error), and Plotly figures with PNG/HTML export."""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st
from PIL import Image, ImageDraw

from core.artifacts import Bundle
from core.errors import CarmorphError
from core.figures import figure_html
from core.imaging import load_image
from core.report import Headline
from ui import format as fmt

logger = logging.getLogger("carmorph.ui")

PLACEHOLDER_COLOUR = (225, 225, 225)
BOX_COLOUR = (228, 0, 43)
MASK_COLOUR = np.array([0, 170, 255], dtype=np.float32)
MASK_ALPHA = 0.4
GALLERY_WIDTH = 128
STRETCH_SIDE = 480  # pixels of a gallery picture shown at a column's width
PHOTO_CACHE = 512  # fitted gallery photos kept in memory (a few MB)


# ------------------------------------------------------------------------------------------------ pictures


def placeholder(size: tuple[int, int] = (128, 96), text: str = "no image") -> Image.Image:
    """A grey picture saying that the image is not available."""
    image = Image.new("RGB", size, PLACEHOLDER_COLOUR)
    draw = ImageDraw.Draw(image)
    left, top, right, bottom = draw.textbbox((0, 0), text)
    draw.text(((size[0] - right + left) / 2, (size[1] - bottom + top) / 2), text, fill=(110, 110, 110))
    return image


def thumbnail(bundle: Bundle, table: pd.DataFrame, row: int) -> Image.Image:
    """The atlas tile of a map-table row; a placeholder when the atlas has none or its shard cannot be read."""
    tile = bundle.manifest.atlas.tile
    try:
        return bundle.thumbnail(int(table["atlas_index"].iat[row]))
    except (IndexError, ValueError, CarmorphError) as error:
        logger.warning("No thumbnail for row %s: %s", row, error)
        return placeholder((tile, tile))


def collection_photo(root: Path | None, relative_path: str, side: int | None = None) -> Image.Image | None:
    """The photo of a collection image under the image root (fitted into `side` x `side` when given), or None
    when it is not there."""
    if root is None:
        return None
    path = root / relative_path
    if not path.is_file():
        return None
    try:
        return _fitted_photo(path, side) if side else load_image(path)
    except CarmorphError as error:
        logger.info("Cannot show %s: %s", path, error)
        return None


@functools.lru_cache(maxsize=PHOTO_CACHE)
def _fitted_photo(path: Path, side: int) -> Image.Image:
    """A collection photo shrunk to fit `side` x `side`: galleries send these, not multi-megapixel originals."""
    picture = load_image(path)
    picture.thumbnail((side, side), Image.Resampling.LANCZOS)
    return picture


def car_picture(
    bundle: Bundle, table: pd.DataFrame, row: int, root: Path | None, side: int | None = None
) -> Image.Image:
    """From the image root when present (fitted into `side` px, else full size), else the atlas thumbnail."""
    return collection_photo(root, str(table["path"].iat[row]), side) or thumbnail(bundle, table, row)


def detection_overlay(image: Image.Image, box: Sequence[float] | None, mask: np.ndarray | None) -> Image.Image:
    """The photo with the car's mask tinted and its box outlined (the photo itself when neither is known)."""
    picture = image.convert("RGB")
    if mask is not None and mask.shape == (picture.height, picture.width):
        pixels = np.asarray(picture, dtype=np.float32)
        pixels[mask] = (1 - MASK_ALPHA) * pixels[mask] + MASK_ALPHA * MASK_COLOUR
        picture = Image.fromarray(pixels.round().astype(np.uint8))
    if box is not None:
        width = max(2, round(max(picture.size) / 150))
        ImageDraw.Draw(picture).rectangle([float(v) for v in box], outline=BOX_COLOUR, width=width)
    return picture


def car_caption(row: pd.Series) -> str:
    """'Audi TT Hatchback 2011 · modernity 2.33 · typicality 0.91'."""
    parts = [str(row["label"]), f"modernity {fmt.score(row['modernity'])}"]
    if pd.notna(row["typicality"]):
        parts.append(f"typicality {fmt.score(row['typicality'])}")
    return " · ".join(parts)


def gallery(
    bundle: Bundle,
    table: pd.DataFrame,
    rows: Sequence[int] | np.ndarray,
    caption: Callable[[pd.Series], str] = car_caption,
    *,
    root: Path | None = None,
    width: int | Literal["stretch"] = GALLERY_WIDTH,
) -> None:
    """Pictures of map-table rows with captions, in one wrapping strip, or stacked at the column's width with
    "stretch" (thumbnails, or photos from `root` fitted to twice the shown width, sent as JPEG)."""
    rows = [int(r) for r in rows]
    if not rows:
        st.caption("No cars to show.")
        return
    side = STRETCH_SIDE if width == "stretch" else 2 * width
    pictures = [car_picture(bundle, table, r, root, side) for r in rows]
    st.image(pictures, caption=[caption(table.iloc[r]) for r in rows], width=width, output_format="JPEG")


# ------------------------------------------------------------------------------------------------- figures


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "figure"


def chart_config(name: str) -> dict:
    """Plotly mode-bar settings: the camera button saves a 2x PNG named after the figure."""
    return {"displaylogo": False, "toImageButtonOptions": {"format": "png", "filename": slug(name), "scale": 2}}


def html_download(figure: go.Figure, name: str, key: str) -> None:
    """A small button that downloads the figure as a standalone interactive HTML page (built on click)."""
    st.download_button(
        "HTML",
        data=lambda: figure_html(figure),
        file_name=f"{slug(name)}.html",
        mime="text/html",
        key=f"html:{key}",
        icon=":material/download:",
        help="Download this figure as an interactive HTML page (the camera icon in the chart saves a PNG).",
        on_click="ignore",
        type="tertiary",
    )


def show_figure(figure: go.Figure, name: str, key: str) -> None:
    """A Plotly figure with PNG (mode bar) and HTML (button) export."""
    st.plotly_chart(figure, key=key, config=chart_config(name), width="stretch")
    html_download(figure, name, key)


# ------------------------------------------------------------------------------------------------ numbers


def split_phrase(evaluation: Any) -> str:
    """'the test split' from a data set's recorded evaluation (its `split`), 'every split' for 'all'."""
    split = evaluation.get("split", "") if isinstance(evaluation, Mapping) else ""
    return "every split" if split == "all" else f"the {split} split" if split else "its evaluation"


def headline_cards(bundle: Bundle, found: Mapping[str, list[Headline]]) -> None:
    """Each data set's main numbers as cards, the change against one constant answer below them, that answer's
    score in the tooltip, and under the cards how far each number moves over resamples of the car models."""
    for dataset, rows in found.items():
        st.markdown(f"**{dataset}** · {split_phrase(bundle.metrics.get(dataset))}")
        cards = st.container(horizontal=True, gap="medium")
        for row in rows:
            cards.metric(
                row.label,
                fmt.headline_value(row),
                delta=fmt.headline_change(row),
                delta_color="inverse" if row.lower_is_better else "normal",
                help=fmt.headline_baseline(row),
                width="content",
            )
        if ranges := fmt.headline_ranges(rows):
            st.caption(ranges)
