"""The upload limits hold together: Streamlit's maxUploadSize (.streamlit/config.toml), the pixel limit in core, and
what the README states (25 MB per upload, 50 megapixels per image).

The browser test tests/e2e/test_bad_inputs.py checks both limits as users meet them.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from core import config

PROJECT_ROOT = Path(__file__).resolve().parent.parent
STREAMLIT_CONFIG = PROJECT_ROOT / ".streamlit" / "config.toml"
README = PROJECT_ROOT / "README.md"
STATED_UPLOAD_MB = 25
STATED_MEGAPIXELS = 50
# A high-quality JPEG photo takes about half a byte per pixel: a 25 MB upload is a photo of about 50 MP. The pixel
# limit should not refuse what the upload limit lets through as an ordinary photo, nor let a bomb decode into
# much more memory than that photo would (3 bytes per RGB pixel).
JPEG_BYTES_PER_PIXEL = 0.5


@pytest.fixture(scope="module")
def streamlit_config() -> dict:
    return tomllib.loads(STREAMLIT_CONFIG.read_text(encoding="utf-8"))


def test_streamlit_caps_uploads_at_the_stated_size(streamlit_config: dict) -> None:
    assert streamlit_config["server"]["maxUploadSize"] == STATED_UPLOAD_MB


def test_core_refuses_images_over_the_stated_pixel_count(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CARMORPH_MAX_PIXELS", raising=False)
    assert config.DEFAULT_MAX_PIXELS == STATED_MEGAPIXELS * 1_000_000
    assert config.max_pixels() == config.DEFAULT_MAX_PIXELS


def test_the_pixel_limit_matches_the_upload_limit(streamlit_config: dict) -> None:
    largest_photo_megapixels = streamlit_config["server"]["maxUploadSize"] / JPEG_BYTES_PER_PIXEL
    assert round(largest_photo_megapixels) * 1_000_000 == config.DEFAULT_MAX_PIXELS
    assert 3 * config.DEFAULT_MAX_PIXELS <= 200_000_000, "a decoded image stays under 200 MB of RGB pixels"


def test_users_never_get_tracebacks_or_usage_tracking(streamlit_config: dict) -> None:
    assert streamlit_config["client"]["showErrorDetails"] == "none"
    assert streamlit_config["browser"]["gatherUsageStats"] is False


def test_the_readme_states_the_same_limits() -> None:
    if not README.is_file():
        pytest.skip("README.md is not written yet")
    text = README.read_text(encoding="utf-8")
    assert re.search(rf"\b{STATED_UPLOAD_MB}\s*MB\b", text), f"README.md should state the {STATED_UPLOAD_MB} MB limit"
    assert re.search(rf"\b{STATED_MEGAPIXELS}\s*(MP|megapixels)\b", text, re.IGNORECASE), (
        f"README.md should state the {STATED_MEGAPIXELS} MP limit"
    )
