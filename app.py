"""Brain-MRI explainability dashboard. Run: streamlit run app.py

The sidebar's pages, with the first one called Home (not after this file).
"""

import streamlit as st

st.set_page_config(page_title="Brain-MRI explainability", page_icon=":brain:", layout="wide")
PAGES = [
    st.Page("pages/0_Home.py", title="Home", icon=":material/home:", default=True),
    st.Page("pages/1_Explain.py", title="Explain", url_path="Explain"),
    st.Page("pages/2_Compare.py", title="Compare", url_path="Compare"),
    st.Page("pages/3_Gallery.py", title="Gallery", url_path="Gallery"),
]
st.navigation(PAGES).run()
