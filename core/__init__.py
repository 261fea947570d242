"""carmorph core: pure Python (no Streamlit) models, scoring, data and artifacts."""
