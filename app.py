"""Streamlit front door: `streamlit run app.py`. Navigation only; each page lives in app_pages/.

The folder is not called `pages/`: Streamlit auto-discovers a `pages/` folder, and a fresh tab
opened straight on a page's URL (a link from the Results page, say) then ran that file on its own,
without this navigation, and listed the helper modules as pages.
"""

from pathlib import Path

import streamlit as st

HERE = Path(__file__).resolve().parent

st.set_page_config(page_title="Distilled attention labels", page_icon="🧪", layout="wide")

pages = [
    st.Page(HERE / "app_pages/distill.py", title="Distill", icon=":material/science:", default=True),
    st.Page(HERE / "app_pages/attention.py", title="Attention", icon=":material/visibility:", url_path="attention"),
    st.Page(HERE / "app_pages/tokens.py", title="Nearest tokens", icon=":material/abc:", url_path="tokens"),
    st.Page(HERE / "app_pages/runs.py", title="Runs", icon=":material/folder_open:", url_path="runs"),
]
if (HERE / "app_pages/results.py").exists():   # hook for the Results page (a later issue adds the file)
    pages.append(st.Page(HERE / "app_pages/results.py", title="Results", icon=":material/table_chart:", url_path="results"))

st.navigation(pages).run()
