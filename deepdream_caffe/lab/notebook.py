"""The notebook's own code: dream.ipynb's code cells, run as Python 3 beside ours.

google/deepdream's dream.ipynb is the specification. Tests, ``make goldens`` and the bench run
its cells as they are, with only what Python 3 needs (``xrange``, the print statement) and its
display stubbed out; every other edit is an exact replacement that fails loudly when the cell
no longer holds the text it replaces. Cells are numbered by position in the notebook:
3 (model loading, then ``preprocess``/``deprocess``), 6 (``make_step``), 8 (``deepdream``),
19 (the zoom loop), 25 (the guide's features) and 27 (``objective_guide``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def code_cells(path: Path | None = None) -> dict[int, str]:
    """The code cells of dream.ipynb (``path``, or the verified asset), by position."""
    if path is None:
        from .. import assets

        path = assets.fetch(assets.NOTEBOOK_ASSETS["dream.ipynb"], progress=False)
    cells = json.loads(Path(path).read_text())["worksheets"][0]["cells"]
    return {i: "".join(c["input"]) for i, c in enumerate(cells) if c["cell_type"] == "code"}


def py3(source: str) -> str:
    """The notebook's two Python 2 idioms made Python 3: xrange, and the print statement
    (its lines dropped: they only display)."""
    lines = [
        line
        for line in source.replace("xrange", "range").splitlines()
        if not line.strip().startswith("print ")
    ]
    return "\n".join(lines)


def edit(source: str, *replacements) -> str:
    """``source`` with each (old, new) replaced; a cell that lacks ``old`` is an error."""
    for old, new in replacements:
        if old not in source:
            raise ValueError(f"the notebook's cell no longer contains {old!r}")
        source = source.replace(old, new)
    return source


def run_cells(sources, **names) -> dict:
    """Execute cells as Python 3 in one namespace (np, nd, ``names``; display stubbed out);
    return the namespace."""
    import scipy.ndimage as nd

    ns = dict(
        np=np, nd=nd, showarray=lambda *a, **k: None, clear_output=lambda *a, **k: None, **names
    )
    for source in sources:
        exec(py3(source), ns)
    return ns


def definitions(cells: dict, net=None, **names) -> dict:
    """The namespace after cells 3 (from ``def preprocess``: its model loading skipped), 6
    and 8: ``preprocess``, ``deprocess``, ``make_step``, ``deepdream``, with ``net`` as the
    global net they use."""
    cell3 = cells[3][cells[3].index("def preprocess") :]
    return run_cells((cell3, cells[6], cells[8]), net=net, **names)


def guide_objective(cells: dict, ns: dict, guide: np.ndarray):
    """Cells 25 and 27 in ``ns``: the guide's features, a global as in the notebook, and
    ``objective_guide`` (the cell's own dream left out)."""
    ns["guide"] = guide
    exec(py3(cells[25]), ns)
    exec(py3(cells[27][: cells[27].index("_=deepdream")]), ns)
    return ns["objective_guide"]


def zoom(cells: dict, ns: dict, frame: np.ndarray, frames: int, params: dict) -> list:
    """Cell 19, the zoom loop, in ``ns`` for ``frames`` frames with ``deepdream(**params)``;
    the frames it would save as JPEG, kept as arrays."""
    loop = edit(
        py3(cells[19]),
        ("range(100)", f"range({frames})"),
        ("deepdream(net, frame)", "deepdream(net, frame, **params)"),
        (
            'PIL.Image.fromarray(np.uint8(frame)).save("frames/%04d.jpg"%frame_i)',
            "saved.append(frame)",
        ),
    )
    ns.update(frame=frame, frame_i=0, saved=[], params=params)
    exec(loop, ns)
    return ns["saved"]
