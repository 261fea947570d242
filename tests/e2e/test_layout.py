"""What a lecture hall sees: deep links open their page without a dialog, nothing is fetched from outside the machine,
and every label stays readable at the default width and at a projector's width in presentation mode (no word broken
mid-word, nothing past the right edge, captions apart, chart titles inside their charts).

Each check waits for the page's run to finish (what the page shows) and for the layout to settle, never for a fixed
time.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest
from e2e_app import ACTIVITY_JS, AppPage, StreamlitServer, refuse_other_hosts

pytestmark = pytest.mark.e2e

DEEP_LINKS = {
    "": "How modern, how typical?",
    "score": "How modern, how typical?",
    "explore": "Explore the embedding map",
    "morphs": "Morphs",
    "report": "Model report",
    "tour": "How modern is a car's design, and how typical is it for its class?",
}
WIDTHS = {
    "default": ({"width": 1400, "height": 1000}, ""),
    "projector": ({"width": 1024, "height": 768}, "present=true"),
}
LAYOUT_PAGES = ("explore", "morphs", "report", "tour?slide=2", "tour?slide=4")
LAYOUT_SETTLE_MS = 5_000
TEXT = '[data-testid="stMain"] :is([data-testid="stMarkdownContainer"], [data-testid="stImageCaption"], button, h1, h4)'

# Words (hyphens may break) whose letters sit on more than one line although the word fits the element's width.
BROKEN_WORDS_JS = """
(selector) => {
  const broken = [];
  for (const element of document.querySelectorAll(selector)) {
    const walker = document.createTreeWalker(element, NodeFilter.SHOW_TEXT);
    for (let node = walker.nextNode(); node; node = walker.nextNode()) {
      for (const match of node.data.matchAll(/[^\\s\\-–·]+/g)) {
        const range = document.createRange();
        range.setStart(node, match.index);
        range.setEnd(node, match.index + match[0].length);
        const rects = [...range.getClientRects()].filter((r) => r.width > 0);
        const tops = new Set(rects.map((r) => Math.round(r.top)));
        const width = rects.reduce((sum, r) => sum + r.width, 0);
        if (tops.size > 1 && width <= element.clientWidth) broken.push(match[0]);  // it would have fitted whole
      }
    }
  }
  return broken;
}
"""
# Pictures, captions and buttons reaching past the main column's right or left edge.
OUTSIDE_JS = """
() => {
  const area = document.querySelector('[data-testid="stMainBlockContainer"]').getBoundingClientRect();
  const selector = '[data-testid="stMain"] :is(img, [data-testid="stImageCaption"], button)';
  return [...document.querySelectorAll(selector)]
    .map((element) => [element, element.getBoundingClientRect()])
    .filter(([, box]) => box.width > 0 && (box.right > area.right + 1 || box.left < area.left - 1))
    .map(([element, box]) => `${element.tagName} ${(element.textContent || element.alt || "").slice(0, 40)} `
      + `[${Math.round(box.left)}, ${Math.round(box.right)}] outside the column's right ${Math.round(area.right)}`);
}
"""
# Pairs of picture captions whose boxes overlap.
OVERLAPS_JS = """
() => {
  const boxes = [...document.querySelectorAll('[data-testid="stMain"] [data-testid="stImageCaption"]')]
    .map((element) => [element.textContent, element.getBoundingClientRect()]).filter(([, b]) => b.width > 0);
  const hits = [];
  boxes.forEach(([a, p], i) => boxes.slice(i + 1).forEach(([b, q]) => {
    if (p.left < q.right - 1 && q.left < p.right - 1 && p.top < q.bottom - 1 && q.top < p.bottom - 1) hits.push([a, b]);
  }));
  return hits;
}
"""
# Plotly titles wider than their chart (cut off at its edge).
CUT_TITLES_JS = """
() => [...document.querySelectorAll('[data-testid="stMain"] .js-plotly-plot')].flatMap((plot) => {
  const frame = plot.getBoundingClientRect();
  return [...plot.querySelectorAll(".gtitle")].map((title) => [title.textContent, title.getBoundingClientRect()])
    .filter(([, box]) => box.left < frame.left - 1 || box.right > frame.right + 1).map(([text]) => text);
})
"""


@pytest.fixture
def guarded(browser: Any, accept_server: StreamlitServer) -> Iterator[Any]:
    """guarded(path, viewport): a page on the app in a context that refuses, and records, every request to another
    host. Yields the opener; the list of refused URLs is its `.refused`."""
    refused: list[str] = []
    contexts: list[Any] = []

    def open_page(path: str, viewport: dict[str, int], name: str) -> AppPage:
        context = browser.new_context(viewport=viewport)
        contexts.append(context)
        context.add_init_script(ACTIVITY_JS)
        refuse_other_hosts(context, accept_server.url, refused)
        return AppPage(context.new_page(), name).open(f"{accept_server.url}/{path}")

    open_page.refused = refused
    yield open_page
    for context in contexts:
        context.close()


def test_deep_links_open_their_page_without_a_dialog_or_a_request_off_the_machine(guarded: Any) -> None:
    for path, title in DEEP_LINKS.items():
        app = guarded(path, WIDTHS["default"][0], f"deep-{path or 'root'}")
        app.expect(app.has_heading(title), f"/{path}: no title {title!r}")
        dialogs = app.page.locator('[role="dialog"]')
        app.expect(dialogs.count() == 0, f"/{path} shows a dialog: {dialogs.all_inner_texts()}")
        app.expect("Page not found" not in app.visible_text(), f"/{path} says 'Page not found'")
        app.expect_no_traceback()
    assert not guarded.refused, f"requests to other hosts: {guarded.refused}"


def settled(app: AppPage, finder: str, arg: Any = None) -> list:
    """What `finder` (a function listing the offending elements) lists once the layout has settled: after the script
    run ends, Plotly still sizes each chart to its column and places its title, so a first look can catch a title
    mid-move. Waits until the list is empty, at most LAYOUT_SETTLE_MS, then returns what is still listed."""
    with contextlib.suppress(Exception):  # Playwright's TimeoutError: still offending, and the list below says what
        app.page.wait_for_function(
            f"(arg) => ({finder})(arg).length === 0", arg=arg, timeout=LAYOUT_SETTLE_MS, polling=100
        )
    return app.page.evaluate(finder, arg)


@pytest.mark.parametrize("width", list(WIDTHS))
@pytest.mark.parametrize("path", LAYOUT_PAGES)
def test_labels_stay_readable(guarded: Any, path: str, width: str) -> None:
    viewport, extra = WIDTHS[width]
    url = f"{path}{'&' if '?' in path else '?'}{extra}" if extra else path
    app = guarded(url, viewport, f"layout-{path}-{width}")
    app.expect_no_traceback()
    broken = settled(app, BROKEN_WORDS_JS, TEXT)
    app.expect(not broken, f"words broken across lines: {broken}")
    outside = settled(app, OUTSIDE_JS)
    app.expect(not outside, f"past the main column: {outside}")
    overlaps = settled(app, OVERLAPS_JS)
    app.expect(not overlaps, f"captions on top of each other: {overlaps}")
    cut = settled(app, CUT_TITLES_JS)
    app.expect(not cut, f"chart titles cut off: {cut}")
    app.screenshot(width)
    assert not guarded.refused, f"requests to other hosts: {guarded.refused}"
