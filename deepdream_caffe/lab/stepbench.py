"""The numpy side of make_step, timed alone: ours against the notebook's cell 6.

``python -m deepdream_caffe.lab.stepbench [--size 1024x575] [--steps 40] [--repeats 7]`` runs
make_step on a :class:`FakeNet`: a data blob of the given size whose diff holds a fixed random
gradient, and a forward and backward pass that do nothing. What is left of a step is its numpy
work (jitter roll, mean |g|, the scaled add, unroll, clip) and its one ``randint``. Rounds of
``--steps`` steps alternate between the two (each first in every other round), so that a
change in the machine's load touches both; the median time per step of each, wall-clock and
CPU, is printed, with the machine, its load average, and whether the two images after every
round are the same bits. The notebook's cell is run from
its file (lab/notebook.py); where the file is unavailable, ours is timed alone.
Numbers only: no test asserts a timing.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import time
from types import SimpleNamespace

import numpy as np

from .. import dream, environment
from ..errors import DreamError

MEAN = np.float32([122.0, 116.0, 104.0])  # the notebook's mean in the data blob's order
END = "end"  # the fake net's one other blob


class FakeNet:
    """What make_step touches of a pycaffe net and nothing more: ``blobs['data']`` (1 x 3 x h x
    w, random float32 image and gradient from ``RandomState(seed)``), ``blobs[END]``,
    ``transformer.mean['data']`` (float32, 3 x 1 x 1, as ``caffe.Classifier`` keeps it) and a
    forward and backward pass that change nothing: the gradient is whatever ``data``'s diff
    holds."""

    def __init__(self, h: int, w: int, seed: int = 0, mean=MEAN):
        rng = np.random.RandomState(seed)
        data = SimpleNamespace(
            data=rng.uniform(-140, 160, (1, 3, h, w)).astype(np.float32),  # some clipped
            diff=rng.standard_normal((1, 3, h, w)).astype(np.float32),
        )
        end = SimpleNamespace(data=np.ones((1, 1, 1, 1), np.float32), diff=np.zeros((1, 1, 1, 1)))
        self.blobs = {"data": data, END: end}
        self.transformer = SimpleNamespace(mean={"data": np.asarray(mean)[:, None, None]})

    def forward(self, end=None):
        pass

    def backward(self, start=None):
        pass


def notebook_make_step():
    """The notebook's cell 6 ``make_step`` (it draws from the global ``np.random``)."""
    from . import notebook

    return notebook.run_cells([notebook.code_cells()[6]])["make_step"]


def round_of_steps(name, make_step, net, steps: int, seed: int) -> tuple[float, float]:
    """Seconds per step over ``steps`` steps from the net's current image: wall-clock and
    this process's CPU time (the steady one on a busy machine)."""
    if name == "notebook":
        np.random.seed(seed)
        kw = {}
    else:
        kw = dict(rng=np.random.RandomState(seed))
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(steps):
        make_step(net, end=END, **kw)
    return (time.perf_counter() - wall) / steps, (time.process_time() - cpu) / steps


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deepdream_caffe.lab.stepbench")
    parser.add_argument("--size", default="1024x575", help="W x H of the image (1024x575)")
    parser.add_argument("--steps", type=int, default=40, help="steps per round (40)")
    parser.add_argument("--repeats", type=int, default=7, help="rounds of each (7)")
    args = parser.parse_args(argv)
    w, h = (int(v) for v in args.size.split("x"))

    variants = {"ours": dream.make_step}
    try:
        variants["notebook"] = notebook_make_step()
    except DreamError as e:
        print(f"the notebook's cell 6 is unavailable, timing ours alone ({e.args[0]})")
    times = {name: [] for name in variants}
    same = True
    for r in range(args.repeats):
        images = set()
        for name in sorted(variants, reverse=r % 2 == 1):
            net = FakeNet(h, w)
            times[name].append(round_of_steps(name, variants[name], net, args.steps, seed=r))
            images.add(hashlib.sha256(net.blobs["data"].data.tobytes()).hexdigest())
            del net  # each round starts from the same free memory
        same = same and len(images) == 1

    print(f"make_step's numpy side at {w}x{h}, {args.steps} steps x {args.repeats} rounds")
    print(f"machine: {environment.cpu_model()}, {os.cpu_count()} CPUs, numpy {np.__version__}")
    print("load average (1, 5, 15 min): {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    for name, t in times.items():
        wall, cpu = (1e3 * statistics.median(x) for x in zip(*t, strict=True))
        print(f"{name:9s} {wall:6.2f} ms/step wall, {cpu:6.2f} ms/step CPU (medians)")
    if len(variants) > 1:
        print(f"same bits after every round: {'yes' if same else 'NO'}")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
