"""abflow's live results dashboard (Streamlit), started with `abflow dashboard`.

`app.py` is the page, `loader.py` the cached data access, `charts.py` the Plotly figures and `formatting.py`
how numbers read.
"""
