"""distill_core: dataset distillation with attention labels (Maekawa et al., ACL 2023) for BERT classifiers.

The engine of the project; it never imports Streamlit.
"""

__version__ = "0.1.0"
