"""The static gallery of a sweep: ``OUTDIR/index.html`` and its thumbnails in ``OUTDIR/thumbs``.

One table per combination of the input and the parameters that are not on the grid's axes
(layer x seed by default; a draw sweep's: class x seed); each cell is a thumbnail linking to
the full image, with its parameters and a link to its sidecar, or the reason its task failed.
Plain HTML and CSS, no script, relative links only, so the folder can be copied or served as
it is.
"""

from __future__ import annotations

import html
from pathlib import Path
from urllib.parse import quote

import PIL.Image

from .imageio import atomic_path

THUMB_SIDE = 256
PARAMS = ("input", "end", "seed", "iter_n", "octave_n", "octave_scale", "step_size", "jitter")
STYLE = """
body { font-family: sans-serif; margin: 1em; background: #fafafa; }
table { border-collapse: collapse; margin-bottom: 2em; }
th, td { border: 1px solid #ccc; padding: 4px; vertical-align: top; }
th { background: #eee; font-weight: normal; font-family: monospace; }
figure { margin: 0; }
figure img { display: block; width: 256px; height: auto; }  /* small ones scaled up */
figcaption, .failed { font-size: 11px; font-family: monospace; max-width: 256px; }
.failed { color: #a00; }
"""


def write(outdir: Path, rows: list, grid=("end", "seed"), params=PARAMS) -> Path:
    """Write thumbnails for the finished results and ``index.html``; return its path.
    ``params``: the row fields that say what a result is (a dream's, or a draw's)."""
    (outdir / "thumbs").mkdir(exist_ok=True)
    for row in rows:
        if row["status"] in ("done", "kept"):
            thumbnail(outdir / row["image"], outdir / "thumbs" / f"{row['name']}.jpg")
    page = outdir / "index.html"
    with atomic_path(page) as tmp:
        tmp.write_text(render(rows, grid, params), encoding="utf-8")
    return page


def thumbnail(image: Path, thumb: Path) -> None:
    if thumb.exists() and thumb.stat().st_mtime_ns >= image.stat().st_mtime_ns:
        return
    with PIL.Image.open(image) as im:
        im = im.convert("RGB")
        im.thumbnail((THUMB_SIDE, THUMB_SIDE))
        with atomic_path(thumb) as tmp:
            im.save(tmp, format="JPEG", quality=85)


def render(rows: list, grid, params=PARAMS) -> str:
    row_axis, col_axis = grid
    rest = [p for p in params if p not in grid]
    sections: dict = {}
    for row in rows:
        sections.setdefault(tuple(row[p] for p in rest), []).append(row)
    counts = {s: sum(r["status"] == s for r in rows) for s in ("done", "kept", "failed")}
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        "<title>deepdream-caffe sweep</title>",
        f"<style>{STYLE}</style></head><body>",
        "<h1>deepdream-caffe sweep</h1>",
        f"<p>{len(rows)} tasks: {counts['done']} run now, {counts['kept']} kept from before, "
        f"{counts['failed']} failed. "
        '<a href="manifest.json">manifest.json</a> <a href="manifest.csv">manifest.csv</a></p>',
    ]
    for key, members in sections.items():
        title = ", ".join(
            f"{p} {Path(v).name if p in ('input', 'schedule') else v}"
            for p, v in zip(rest, key, strict=True)
        )
        parts.append(f"<h2>{esc(title)}</h2>")
        parts.append(table(members, row_axis, col_axis, params))
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def table(rows: list, row_axis: str, col_axis: str, params=PARAMS) -> str:
    row_values = list(dict.fromkeys(r[row_axis] for r in rows))
    col_values = list(dict.fromkeys(r[col_axis] for r in rows))
    cells = {(r[row_axis], r[col_axis]): r for r in rows}
    out = [f"<table><tr><th>{esc(row_axis)} \\ {esc(col_axis)}</th>"]
    out += [f"<th>{esc(col_axis)} {esc(v)}</th>" for v in col_values]
    out.append("</tr>")
    for rv in row_values:
        out.append(f"<tr><th>{esc(rv)}</th>")
        out += [f"<td>{cell(cells.get((rv, cv)), params)}</td>" for cv in col_values]
        out.append("</tr>")
    out.append("</table>")
    return "".join(out)


def cell(row, shown=PARAMS) -> str:
    if row is None:
        return ""
    params = " ".join(
        f"{p}={Path(row[p]).name if p == 'schedule' else row[p]}" for p in shown if p != "input"
    )
    if row["status"] not in ("done", "kept"):
        return (
            f'<div class="failed">{esc(row["status"])}: {esc(row["reason"])}<br>{esc(params)}</div>'
        )
    image, sidecar, thumb = (
        quote(row["image"]),
        quote(row["sidecar"]),
        quote(f"thumbs/{row['name']}.jpg"),
    )
    return (
        f'<figure><a href="{image}"><img src="{thumb}" alt="{esc(row["name"])}" '
        f'title="{esc(params)}"></a><figcaption>{esc(params)}<br>'
        f'<a href="{image}">full image</a> <a href="{sidecar}">sidecar</a>'
        "</figcaption></figure>"
    )


def esc(value) -> str:
    return html.escape(str(value), quote=True)
