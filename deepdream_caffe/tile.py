"""``--tile N``: the gradient of one step computed tile by tile, so memory follows the tile.

Google's TensorFlow DeepDream tutorial (``calc_grad_tiled``, by the notebook's author) did
this for large images: shift the image by a random offset up to the tile size, compute the
gradient of each tile on its own, put the pieces together and shift back, so that the tile
borders move at every step and no seam builds up. Here the notebook's step stays as it is
(jitter roll, normalised step over the whole image, unroll, clip, :func:`dream.make_step`);
only its three gradient lines (forward, objective, backward) run per tile.

- Each dimension is cut into the fewest nearly equal pieces of at most N pixels, so no tile
  is a thin sliver the net cannot take.
- The grid offset comes from its own generator (:func:`grid_rng`), never from the jitter's:
  the notebook's jitter stream is unchanged, and a step whose image fits in one tile is the
  notebook's step exactly (no draw, no roll), so ``--tile`` at or above the image size gives
  the untiled dream bit for bit.
- Tiles see no context past their border (docs/deviations.md): a tiled dream is not the
  untiled dream, only one without seams.
"""

from __future__ import annotations

import math

import numpy as np

TILE_STREAM = 0x7115  # the grid generator's second seed word: a stream apart from the jitter's


def grid_rng(seed: int) -> np.random.Generator:
    """The generator of the tile grid's offsets for a run seeded with ``seed``."""
    return np.random.default_rng([seed, TILE_STREAM])


def cuts(n: int, tile: int) -> list:
    """``(start, stop)`` of the fewest nearly equal pieces of ``range(n)``, each at most
    ``tile`` long."""
    pieces = math.ceil(n / tile)
    edges = [round(i * n / pieces) for i in range(pieces + 1)]
    return list(zip(edges[:-1], edges[1:], strict=True))


def smallest_piece(n: int, tile: int) -> int:
    return min(b - a for a, b in cuts(n, tile))


def tile_sizes(sizes, tile: int) -> list:
    """The (H, W) the net takes at each octave of ``sizes`` with tiles of at most ``tile``:
    the octave itself where it fits in one tile, else its smallest and largest tiles."""
    out = []
    for h, w in sizes:
        if h <= tile and w <= tile:
            out.append((h, w))
        else:
            out.append((smallest_piece(h, tile), smallest_piece(w, tile)))
            out.append((min(h, tile), min(w, tile)))
    return out


def estimate_bytes(model, sizes, tile: int, notebook_net: bool) -> int:
    """Memory of a tiled dream: the net at its largest tile, numpy's copies of the whole
    image (checks.estimate_bytes counts about 12 of the largest size)."""
    from . import checks

    h, w = sizes[-1]
    th, tw = min(h, tile), min(w, tile)
    return checks.estimate_bytes(model, [*sizes[:-1], (th, tw)], notebook_net) + 4 * 12 * 3 * (
        h * w - th * tw
    )


def tile_that_fits(model, sizes, notebook_net: bool, free: int) -> int | None:
    """The largest --tile, a multiple of 64 from 1024 down, whose dream fits in ``free``."""
    for t in range(1024, 63, -64):
        if estimate_bytes(model, sizes, t, notebook_net) <= free:
            return t
    return None


def tiled_gradient(tile: int, rng: np.random.Generator):
    """``gradient(net, end, objective)`` for :func:`dream.make_step`: the data gradient of
    the image in the net's data blob, computed in tiles of at most ``tile`` x ``tile``."""

    def gradient(net, end, objective):
        src, dst = net.blobs["data"], net.blobs[end]
        h, w = src.data.shape[-2:]
        if h <= tile and w <= tile:  # one tile: the notebook's three lines, nothing drawn
            net.forward(end=end)
            objective(dst)
            net.backward(start=end)
            return src.diff[0]
        img = src.data[0].copy()
        sy, sx = (int(v) for v in rng.integers(0, tile, 2))  # the grid's offset
        shifted = np.roll(np.roll(img, sx, -1), sy, -2)
        grad = np.zeros_like(img)
        for y0, y1 in cuts(h, tile):
            for x0, x1 in cuts(w, tile):
                src.reshape(1, 3, y1 - y0, x1 - x0)
                src.data[0] = shifted[:, y0:y1, x0:x1]
                net.forward(end=end)
                objective(dst)
                net.backward(start=end)
                grad[:, y0:y1, x0:x1] = src.diff[0]
        src.reshape(1, 3, h, w)
        src.data[0] = img
        return np.roll(np.roll(grad, -sx, -1), -sy, -2)

    return gradient
