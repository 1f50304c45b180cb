"""R2R Studio: search a collection and see why each document ranks where it does.

Run with `r2r app` (or `make app`). This file only wires pages together; every computation comes
from r2r_core, which never imports the app.
"""

from __future__ import annotations

import streamlit as st

st.set_page_config(page_title="R2R Studio", page_icon=":mag:", layout="wide")

pages = [
    st.Page("views/search.py", title="Search", icon=":material/search:", default=True),
    st.Page("views/document.py", title="Document", icon=":material/article:"),
    st.Page("views/pairwise.py", title="Pairwise", icon=":material/compare_arrows:"),
    st.Page("views/annotate.py", title="Annotate", icon=":material/flag:"),
    st.Page("views/evaluation.py", title="Evaluation", icon=":material/leaderboard:"),
]
# The page scripts live in views/, not pages/: Streamlit treats a pages/ folder next to the entry
# point as its older multipage mode, which a fresh server applies to direct links.
st.navigation(pages).run()
