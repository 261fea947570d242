"""Streamlit helpers shared by the pages (bundle loading, settings, errors, images, figures)."""
