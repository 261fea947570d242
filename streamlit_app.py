"""carmorph: how modern is a car's design, and how typical is it for its class?  `streamlit run streamlit_app.py`

The entry point is the frame around every page: page config, navigation, the shared sidebar (bundle, image
root, presentation toggle, about). Pages live in app_pages/ (not pages/: a folder of that name
would switch Streamlit to its older pages-directory mode, in which a first visit to /explore runs the page
without this frame) and call into core/ through the helpers in ui/.
"""

from __future__ import annotations

import streamlit as st

from core.artifacts import Bundle
from core.report import initialisation_line
from ui import common

PAGES = (
    st.Page("app_pages/score.py", title="Score a car", icon=":material/photo_camera:", url_path="start", default=True),
    st.Page("app_pages/explore.py", title="Explore the map", icon=":material/scatter_plot:", url_path="explore"),
    st.Page("app_pages/morphs.py", title="Morphs", icon=":material/grid_view:", url_path="morphs"),
    st.Page("app_pages/report.py", title="Model report", icon=":material/monitoring:", url_path="report"),
    st.Page("app_pages/tour.py", title="Tour", icon=":material/slideshow:", url_path="tour"),
)
# The default page is served at "/" only (its own url_path, "start", is reserved but never shown), so a shared
# /score link found no page and showed "Page not found": this hidden page answers /score with the same script.
SCORE_LINK = st.Page("app_pages/score.py", title="Score a car", url_path="score", visibility="hidden")


def route_page_parameter(current: st.Page) -> None:
    """`?page=<name>` opens that page with the other parameters kept (the page is also the URL path: /explore)."""
    wanted = st.query_params.get("page")
    target = next((page for page in (*PAGES, SCORE_LINK) if page.url_path == wanted), None)
    if target is not None and target.url_path != current.url_path:
        params = {key: st.query_params.get_all(key) for key in st.query_params if key != "page"}
        st.switch_page(target, query_params=params)


def bundle_line(bundle: Bundle | None) -> str:
    if bundle is None:
        return "No bundle loaded."
    created = bundle.manifest.created[:10] or "unknown date"
    return f"**{bundle.name}** · {len(bundle.images):,} images · built {created}"


def sidebar(bundle: Bundle | None) -> None:
    """Bundle and provenance, the image root, the presentation toggle, and what the scores mean."""
    with st.sidebar:
        st.markdown(bundle_line(bundle))
        if bundle is not None:
            datasets = bundle.provenance.get("datasets")
            sources = ", ".join(datasets) if isinstance(datasets, dict) else "see the Model report"
            networks = initialisation_line(bundle.manifest.networks, bundle.manifest.training)
            st.caption(f"Data: {sources}. Backbones: {networks}.")
        st.text_input(
            "Image root",
            value=common.default_image_root(),
            key=common.IMAGE_ROOT_KEY,
            help="Folder that the bundle's image paths are relative to (full-size photos, 'try a car'). "
            "Without it, galleries use the bundle's thumbnails.",
        )
        if common.image_root() is None:
            st.caption("Image root not found: galleries show thumbnails only.")
        st.toggle(
            "Presentation mode",
            key=common.PRESENT_KEY,
            bind="query-params",
            help="Hide the sidebar and enlarge type and figures for a projector.",
        )
        with st.expander("About the scores"):
            st.markdown(common.ABOUT)


def main() -> None:
    st.set_page_config(page_title="carmorph", page_icon=common.app_icon(), layout="wide")
    page = st.navigation([*PAGES, SCORE_LINK], position="top" if common.presenting() else "sidebar")
    route_page_parameter(page)  # before any widget binds its parameter: bound parameters cannot be passed on
    bundle, _ = common.bundle_or_error()
    sidebar(bundle)
    common.apply_presentation()
    page.run()


main()
