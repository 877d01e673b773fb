"""Streamlit front door: `streamlit run app.py`. Navigation only; each page lives in pages/."""

from pathlib import Path

import streamlit as st

HERE = Path(__file__).resolve().parent

st.set_page_config(page_title="Distilled attention labels", page_icon="🧪", layout="wide")

pages = [
    st.Page(HERE / "pages/distill.py", title="Distill", icon=":material/science:", default=True),
    st.Page(HERE / "pages/attention.py", title="Attention", icon=":material/visibility:", url_path="attention"),
    st.Page(HERE / "pages/tokens.py", title="Nearest tokens", icon=":material/abc:", url_path="tokens"),
    st.Page(HERE / "pages/runs.py", title="Runs", icon=":material/folder_open:", url_path="runs"),
]
if (HERE / "pages/results.py").exists():   # hook for the Results page (a later issue adds the file)
    pages.append(st.Page(HERE / "pages/results.py", title="Results", icon=":material/table_chart:", url_path="results"))

st.navigation(pages).run()
