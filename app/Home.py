"""R2R Studio: search a collection and see why each document ranks where it does.

Run with `r2r app` (or `make app`). This file only wires pages together; every computation comes
from r2r_core, which never imports the app.
"""

from __future__ import annotations

import streamlit as st

st.set_page_config(page_title="R2R Studio", page_icon=":mag:", layout="wide")

pages = [
    st.Page("pages/search.py", title="Search", icon=":material/search:", default=True),
]
st.navigation(pages).run()
