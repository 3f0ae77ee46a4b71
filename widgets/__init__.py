"""Interactive JupyterLab front ends of galaxalign: the neighbour explorer and the symbol and text search.

Built on ipywidgets 8 and plotly's FigureWidget. This package imports
galaxalign; galaxalign never imports it, so the library runs without Jupyter.
"""

from .explorer import NeighbourExplorer
from .search import SearchPanel

__all__ = ["NeighbourExplorer", "SearchPanel"]
