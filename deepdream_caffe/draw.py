"""auduno/deepdraw's class visualisation (``deepdraw.ipynb``, 2015), line for line, in Python 3.

deepdraw (Apache-2.0, commit 13f9539) builds on dream.ipynb's make_step: a one-hot objective
on a classifier blob, a Gaussian blur after each step whose radius shrinks over the steps,
224x224 crops of a growing image at normally distributed offsets, and a schedule of octaves.
Hold each function beside its cell: ``blur`` (cell 1; preprocess and deprocess are the
deepdream notebook's, :mod:`deepdream_caffe.dream`), ``make_step`` and ``deepdraw`` (cell 3),
the schedules and the start image (cells 5 and 7).

What differs, and why no number changes (docs/deviations.md): the random numbers come from an
explicit ``rng`` (``np.random.RandomState(S)`` draws what deepdraw drew after
``np.random.seed(S)``), display is a ``callback``, ``int()`` takes the element of numpy's
one-element array (numpy 2 refuses the array), ``nd.gaussian_filter`` is the function deepdraw
reached as ``nd.filters.gaussian_filter``, a zero or non-finite step stops with an error, and
every forward pass can be checked (``check``) before its backward pass.

No files, no network, no argument parsing here: arrays in, arrays out, state in the net.
"""

from __future__ import annotations

import numpy as np
import scipy.ndimage as nd

from .dream import check_step, deprocess, preprocess

# cell 1: caffe.Classifier(..., mean=np.float32([104.0, 117.0, 123.0])), B,G,R; not
# dream.ipynb's 104,116,122
MEAN_BGR = (104.0, 117.0, 123.0)
# cell 5: the background colour of the start image and the spread of its noise
BACKGROUND = 200.0
NOISE_SD = 8
# cell 5: the class the notebook draws (13: junco, snowbird)
CLASS = 13

# cell 5: "the one used for visualizations in the blogpost"
BLOG = (
    dict(layer="loss3/classifier", iter_n=190, start_sigma=2.5, end_sigma=0.78,
         start_step_size=11., end_step_size=11.),
    dict(layer="loss3/classifier", scale=1.2, iter_n=150, start_sigma=0.78*1.2, end_sigma=0.78,
         start_step_size=6., end_step_size=6.),
    dict(layer="loss2/classifier", scale=1.2, iter_n=150, start_sigma=0.78*1.2, end_sigma=0.44,
         start_step_size=6., end_step_size=3.),
    dict(layer="loss1/classifier", iter_n=10, start_sigma=0.44, end_sigma=0.304,
         start_step_size=3., end_step_size=3.),
)
# cell 7: "tends to give more coherent images, but has a little bit less detail"
COHERENT = (
    dict(layer="loss3/classifier", iter_n=190, start_sigma=2.5, end_sigma=0.78,
         start_step_size=11., end_step_size=11.),
    dict(layer="loss3/classifier", scale=1.2, iter_n=450, start_sigma=0.78*1.2, end_sigma=0.40,
         start_step_size=6., end_step_size=3.),
)
SCHEDULES = {"blog": BLOG, "coherent": COHERENT}


# cell 5: gen_image = np.random.normal(background_color, 8, (original_w, original_h, 3))
def start_image(w=224, h=224, rng=np.random):
    """deepdraw's start image: normal noise around grey 200, (w, h, 3) as deepdraw wrote it
    (its net is square, so the swapped names change nothing)."""
    background_color = np.float32([BACKGROUND, BACKGROUND, BACKGROUND])
    return rng.normal(background_color, NOISE_SD, (w, h, 3))


# cell 1
def blur(img, sigma):
    if sigma > 0:
        img[0] = nd.gaussian_filter(img[0], sigma, order=0)
        img[1] = nd.gaussian_filter(img[1], sigma, order=0)
        img[2] = nd.gaussian_filter(img[2], sigma, order=0)
    return img


# cell 3
def make_step(net, step_size=1.5, end='inception_4c/output', clip=True, focus=None, sigma=None,
              check=None):
    '''Basic gradient ascent step.'''

    src = net.blobs['data']  # input image is stored in Net's 'data' blob

    dst = net.blobs[end]
    net.forward(end=end)
    if check is not None:
        check()  # the forward pass checked before the backward pass (guards.check_forward)

    one_hot = np.zeros_like(dst.data)
    one_hot.flat[focus] = 1.
    dst.diff[:] = one_hot

    net.backward(start=end)
    g = src.diff[0]
    g_mean = np.abs(g).mean()  # deepdraw computes this inline, below
    check_step(g_mean, step_size, end)
    src.data[:] += step_size/g_mean * g

    if clip:
        bias = net.transformer.mean['data']
        src.data[:] = np.clip(src.data, -bias, 255-bias)

    src.data[0] = blur(src.data[0], sigma)

    # reset objective for next step
    dst.diff.fill(0.)


# cell 3
def deepdraw(net, base_img, octaves, random_crop=True, focus=None, clip=True, rng=np.random,
             callback=None, check=None):
    """Draw class ``focus`` into ``base_img`` (rows x columns x 3, RGB) through ``octaves``
    (dicts of layer, iter_n, optional scale, start/end_sigma, start/end_step_size); return the
    image as deprocess gives it (float32).

    ``callback(octave, i, net)``, if given, runs after every step, where deepdraw displayed
    the crop; ``check()`` runs after every forward pass. deepdraw's unused ``visualize`` and
    ``**step_params`` are left out.
    """
    # prepare base image
    image = preprocess(net, base_img)  # (3,224,224)

    # get input dimensions from net
    w = net.blobs['data'].width
    h = net.blobs['data'].height

    src = net.blobs['data']
    src.reshape(1, 3, h, w)  # resize the network's input image size
    for e, o in enumerate(octaves):
        if 'scale' in o:
            # resize by o['scale'] if it exists
            image = nd.zoom(image, (1, o['scale'], o['scale']))
        _, imw, imh = image.shape  # deepdraw's names: imw counts rows (its images are square)

        # select layer
        layer = o['layer']

        for i in range(o['iter_n']):
            if imw > w:
                if random_crop:
                    # randomly select a crop
                    mid_x = (imw-w)/2.
                    width_x = imw-w
                    ox = rng.normal(mid_x, width_x*0.3, 1)
                    ox = int(np.clip(ox, 0, imw-w)[0])
                    mid_y = (imh-h)/2.
                    width_y = imh-h
                    oy = rng.normal(mid_y, width_y*0.3, 1)
                    oy = int(np.clip(oy, 0, imh-h)[0])
                    # insert the crop into src.data[0]
                    src.data[0] = image[:, ox:ox+w, oy:oy+h]
                else:
                    ox = int((imw-w)/2.)  # Python 2's numpy truncated a float index
                    oy = int((imh-h)/2.)
                    src.data[0] = image[:, ox:ox+w, oy:oy+h]
            else:
                ox = 0
                oy = 0
                src.data[0] = image.copy()

            sigma = o['start_sigma'] + ((o['end_sigma'] - o['start_sigma']) * i) / o['iter_n']
            step_size = (o['start_step_size']
                         + ((o['end_step_size'] - o['start_step_size']) * i) / o['iter_n'])

            make_step(net, end=layer, clip=clip, focus=focus,
                      sigma=sigma, step_size=step_size, check=check)

            if callback is not None:
                callback(e, i, net)

            # insert modified image back into original image (if necessary)
            image[:, ox:ox+w, oy:oy+h] = src.data[0]

    # returning the resulting image
    return deprocess(net, image)


def sizes(octaves, side=224):
    """The side of deepdraw's (square) image in each octave: nd.zoom's rounding."""
    out = []
    for o in octaves:
        if 'scale' in o:
            side = int(round(side * o['scale']))
        out.append(side)
    return out
