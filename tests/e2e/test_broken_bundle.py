"""A broken bundle gives the user one clear message naming the problem, on every page, never a stack trace.

The mutable server points at a copy of the tiny bundle; each case resets it and breaks it before the page loads
(the app does not cache a bundle that failed to load, so the same server serves every case).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from e2e_app import ERROR, AppPage, MutableBundle, StreamlitServer

pytestmark = pytest.mark.e2e

NEWER_SCHEMA = 99
# case -> (how to break the bundle, words the message must contain)
BROKEN: dict[str, tuple[Callable[[MutableBundle], Path], tuple[str, ...]]] = {
    "missing-file": (
        lambda bundle: bundle.without_file("modernity.safetensors"),
        ("incomplete", "missing file modernity.safetensors"),
    ),
    "missing-atlas-shard": (
        lambda bundle: bundle.without_file("atlas/00001.jpg"),
        ("incomplete", "missing file atlas/00001.jpg"),
    ),
    "corrupted-weights": (
        lambda bundle: bundle.with_corrupted_file("bodytype.safetensors", update_hash=False),
        ("bodytype.safetensors", "corrupted"),
    ),
    "unreadable-weights-with-matching-hash": (
        lambda bundle: bundle.with_corrupted_file("frontal.safetensors", update_hash=True),
        ("frontal.safetensors", "not a readable safetensors file"),
    ),
    "newer-schema": (
        lambda bundle: bundle.with_manifest(schema_version=NEWER_SCHEMA),
        (f"schema version {NEWER_SCHEMA}", "newer than this carmorph reads"),
    ),
}
# Navigation label of each page checked -> its title.
PAGES = {"Score a car": "How modern, how typical?", "Explore the map": "Explore the embedding map"}


def expect_one_clear_message(app: AppPage, words: tuple[str, ...]) -> None:
    app.expect_no_traceback()
    errors = app.texts(f'[data-testid="stMain"] {ERROR}')
    app.expect(len(errors) == 1, f"expected exactly one error message, got {errors}")
    app.expect(all(word in errors[0] for word in words), f"the message does not name the problem {words}: {errors}")
    app.expect("could not be loaded" in errors[0], f"the message does not say what it means: {errors}")
    app.expect_text("python -m training.build")  # and how to make a bundle


@pytest.mark.parametrize("case", list(BROKEN))
def test_a_broken_bundle_gives_one_clear_message(
    open_app: Callable[..., AppPage], mutable_server: StreamlitServer, mutable_bundle: MutableBundle, case: str
) -> None:
    breaks, words = BROKEN[case]
    breaks(mutable_bundle)
    app = open_app(mutable_server)
    for label, title in PAGES.items():
        if not app.has_heading(title):
            app.navigate(label)
        app.expect(app.has_heading(title), f"{label}: no title {title!r}")
        expect_one_clear_message(app, words)
        app.expect_text("No bundle loaded.")  # the sidebar says so too
        app.screenshot(label)
