"""Eight people scoring different photos at the same moment each get their own result, from one copy of the models.

A fresh server on the accept bundle: its resident memory is read (VmRSS of the streamlit process) with no session
yet, after one session scored a photo (bundle and models loaded), and after eight more sessions scored eight other
photos at once. Eight browser contexts are eight Streamlit sessions; their uploads are all set before any result is
awaited, so the server scores them concurrently. Each page must show the modernity `score_image` gives its own
photo in the test process, and the photos are chosen so no two of those values could be confused. The figures go
to test-output/e2e/concurrency.json.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import ACCEPT_ALL
from e2e_app import OUTPUT_DIR, AppPage, StreamlitServer, bundle_variant, running_streamlit

from core.pipeline import score_image

pytestmark = pytest.mark.e2e

SESSIONS = 8
# Two photos' modernity must differ by more than this for a page's value (2 decimals, ±0.005, plus float noise
# between processes) to identify its photo.
DISTINCT_GAP = 0.015
MATCH_TOLERANCE = 0.0065
FIGURES_FILE = OUTPUT_DIR / "concurrency.json"


@pytest.fixture(scope="module")
def accept_bundle_dir(tmp_path_factory: pytest.TempPathFactory, fixture_data_dir: Path) -> Path:
    """An untrained bundle whose scores differ from photo to photo (no lean towards one group), accepting all."""
    from core.artifacts import build_untrained_bundle

    root = tmp_path_factory.mktemp("concurrency")
    build_untrained_bundle(root / "spread", fixture_data_dir, name="tiny-test-bundle", lean=False)
    return bundle_variant(root / "spread", root / "accept", thresholds=ACCEPT_ALL)


@pytest.fixture(scope="module")
def accept_bundle(accept_bundle_dir: Path):
    from core.artifacts import load_bundle

    return load_bundle(accept_bundle_dir)


@pytest.fixture(scope="module")
def fresh_server(chromium: Path, accept_bundle_dir: Path, fixture_data_dir: Path) -> Iterator[StreamlitServer]:
    """A server of its own, so its memory before any session is measured."""
    with running_streamlit("concurrency", accept_bundle_dir, fixture_data_dir) as server:
        yield server


def distinct_photos(scores: dict[Path, float], count: int) -> dict[Path, float]:
    """`count` photos whose modernity scores lie at least DISTINCT_GAP apart (greedy, lowest score first)."""
    chosen: dict[Path, float] = {}
    for path, score in sorted(scores.items(), key=lambda item: item[1]):
        if all(abs(score - other) > DISTINCT_GAP for other in chosen.values()):
            chosen[path] = score
    assert len(chosen) >= count, f"only {len(chosen)} fixture photos have distinguishable scores: {chosen}"
    return dict(list(chosen.items())[:count])


def modernity_by_photo(rows: dict[str, list[dict[str, str]]], bundle) -> dict[Path, float]:
    photos = [Path(row["path"]) for dataset in ("stanford_cars", "epfl_multiview") for row in rows[dataset]]
    return {path: score_image(path.read_bytes(), bundle).modernity.score for path in photos}


def mib(kib: int) -> float:
    return round(kib / 1024, 1)


def test_eight_sessions_score_at_once_each_with_its_own_result(
    open_app: Callable[..., AppPage],
    fresh_server: StreamlitServer,
    accept_bundle,
    fixture_rows: dict[str, list[dict[str, str]]],
) -> None:
    rss_idle = fresh_server.rss_kib()
    scores = modernity_by_photo(fixture_rows, accept_bundle)
    expected = distinct_photos(scores, SESSIONS + 1)
    first_photo, *photos = expected

    first = open_app(fresh_server, label="first")
    started = time.monotonic()
    first.expect_scored(first.upload(first_photo))
    single_s = time.monotonic() - started
    rss_one = fresh_server.rss_kib()

    pages = [open_app(fresh_server, label=f"session-{i + 1}") for i in range(SESSIONS)]
    started = time.monotonic()
    for page, photo in zip(pages, photos, strict=True):
        page.start_upload(photo)
    set_s = time.monotonic() - started
    shown = [page.finish_upload() for page in pages]
    concurrent_s = time.monotonic() - started
    rss_eight = fresh_server.rss_kib()

    results = []
    for page, photo, outcome in zip(pages, photos, shown, strict=True):
        page.expect_scored(outcome)
        own = expected[photo]
        closest = min(expected, key=lambda p: abs(expected[p] - outcome.modernity))
        page.expect(
            closest == photo and abs(outcome.modernity - own) <= MATCH_TOLERANCE,
            f"{photo.name}: the page shows modernity {outcome.modernity}, its photo scores {own:.3f}; "
            f"closest is {closest.name} ({expected[closest]:.3f})",
        )
        listed = page.uploaded_names()
        page.expect(listed == [photo.name], f"the uploader of {photo.name}'s session lists {listed}")
        results.append({"photo": photo.name, "expected": round(own, 3), "shown": outcome.modernity})
    first.expect(first.uploaded_names() == [first_photo.name], "the first session's upload changed")

    weights_mib = sum(
        sum(t.numel() * t.element_size() for t in net.parameters()) / 2**20
        for net in (accept_bundle.modernity, accept_bundle.bodytype, accept_bundle.gate)
    )
    figures = {
        "sessions": SESSIONS,
        "server_pid": fresh_server.pid,
        "cpus": os.cpu_count(),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "rss_mib": {"idle": mib(rss_idle), "after_one_session": mib(rss_one), "after_eight_more": mib(rss_eight)},
        "model_weights_mib": round(weights_mib, 1),
        "growth_mib": {"first_session": mib(rss_one - rss_idle), "eight_sessions": mib(rss_eight - rss_one)},
        "seconds": {
            "one_session_upload_to_result": round(single_s, 2),
            "eight_uploads_set_within": round(set_s, 2),
            "eight_sessions_upload_to_last_result": round(concurrent_s, 2),
        },
        "results": results,
    }
    OUTPUT_DIR.mkdir(parents=True, exist_ok=True)
    FIGURES_FILE.write_text(json.dumps(figures, indent=2))
    print(json.dumps(figures, indent=2))
    # Models loaded once per process: a copy per session would add at least SESSIONS x the weights; allow half that
    # for what sessions do hold (their results, images, figures) and the allocator's per-thread arenas.
    growth = (rss_eight - rss_one) / 1024
    budget = SESSIONS / 2 * weights_mib
    assert growth < budget, (
        f"{SESSIONS} sessions grew the server by {growth:.0f} MiB, over {budget:.0f} (weights {weights_mib:.0f} MiB)"
    )
