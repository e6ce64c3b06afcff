"""DeepDream on video: samim23/DeepDreamAnim ``dreamer.py`` (2015)'s two loops, in Python 3.

Hold each loop beside the two branches of dreamer.py's ``main``: every frame is dreamt with the
notebook's ``deepdream`` and the dream is carried to the next frame either

- by blending (:func:`blend_frames`, dreamer.py's default): the next frame starts from
  ``PIL.Image.blend(previous saved dream, next raw frame, blend)``, or the raw frame when
  ``blend`` is 0; or
- along optical flow (:func:`flow_frames`, ``--flow 1``): Farneback flow from the previous raw
  frame to the next, with dreamer.py's parameters, warps the previous dream's detail (dream
  minus its raw frame) onto the next raw frame.

The end layer cycles through ``layers`` as dreamer.py's does: in the blend loop frame ``v``
(from 0) takes ``layers[(v + 1) % len(layers)]`` (its counter starts at 1), in the flow loop
``layers[v % len(layers)]``. One random stream runs through all frames, as dreamer.py's global
one did after ``np.random.seed(S)``.

What differs from dreamer.py, and why no number changes (docs/deviations.md): frames are
arrays, not files (a saved PNG read back is the same uint8 array); every input frame is
dreamt (dreamer.py's blend loop leaves the last one out); a loop can start at any frame from
the state its previous frame left (``previous``, and the random state), which is how a run
resumes; the blend loop clips before the 8-bit cast, as the flow loop does (the same bits
whenever the dream is clipped, the default).

No files and no flags here: ``read(i)`` gives input frame ``i`` (RGB, ``PIL.Image``) and
``dream_frame(img, end)`` dreams one (float32 in, float32 out).
"""

from __future__ import annotations

import numpy as np
import PIL.Image

from .dream import to_uint8

# dreamer.py's cv2.calcOpticalFlowFarneback arguments
FARNEBACK = dict(
    pyr_scale=0.5, levels=3, winsize=15, iterations=3, poly_n=5, poly_sigma=1.2, flags=0
)


def blend_frames(
    read, count, dream_frame, blend=0.5, layers=("inception_4c/output",), first=0, previous=None
):
    """Yield ``(v, saved, None)`` for frames ``first`` .. ``count - 1``: dreamer.py's blend
    loop. ``saved`` is the frame's 8-bit dream; ``previous``, when starting past frame 0, is
    the 8-bit dream of frame ``first - 1``."""
    frame = read(first)
    if first > 0:
        frame = carry_blend(previous, frame, blend)
    frame = np.float32(frame)
    for v in range(first, count):
        end = layers[(v + 1) % len(layers)]
        frame = dream_frame(frame, end)
        saved = to_uint8(frame)
        yield v, saved, None
        if v + 1 < count:
            frame = np.float32(carry_blend(saved, read(v + 1), blend))


def carry_blend(saved, raw, blend):
    """dreamer.py's next start: the raw frame for ``blend`` 0, else morphPicture's blend."""
    if blend == 0:
        return raw
    return PIL.Image.blend(PIL.Image.fromarray(saved), raw, blend)


def flow_frames(read, count, dream_frame, layers=("inception_4c/output",), first=0, previous=None):
    """Yield ``(v, saved, hallu)`` for frames ``first`` .. ``count - 1``: dreamer.py's flow
    loop. ``hallu`` is the frame's float32 dream, clipped, which the next frame carries;
    ``previous``, when starting past frame 0, is that of frame ``first - 1``."""
    import cv2

    if first == 0:
        img = np.float32(read(0))
        hallu = dream_frame(img, layers[0])
        np.clip(hallu, 0, 255, out=hallu)
        yield 0, np.uint8(hallu), hallu
        first = 1
    else:
        img, hallu = np.float32(read(first - 1)), previous
    h, w = img.shape[:2]
    gray = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
    for v in range(first, count):
        previous_img, previous_gray = img, gray
        img = np.float32(read(v))
        gray = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
        flow = cv2.calcOpticalFlowFarneback(previous_gray, gray, flow=None, **FARNEBACK)
        flow = -flow
        flow[:, :, 0] += np.arange(w)
        flow[:, :, 1] += np.arange(h)[:, np.newaxis]
        halludiff = hallu - previous_img
        halludiff = cv2.remap(halludiff, flow, None, cv2.INTER_LINEAR)
        hallu = img + halludiff
        hallu = dream_frame(hallu, layers[v % len(layers)])
        np.clip(hallu, 0, 255, out=hallu)
        yield v, np.uint8(hallu), hallu
