"""Explainability engine for brain-MRI classifiers (no Streamlit in here)."""
