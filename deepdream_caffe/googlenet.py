"""GoogLeNet as Caffe's shipped ``models/bvlc_googlenet/deploy.prototxt`` defines it.

One builder, written with ``caffe.NetSpec`` and parameterised by the number of classes, so that
the same code describes bvlc_googlenet (1000 classes) and the Places205 architecture (205
classes, with the auxiliary heads loss1/loss2 its deploy file keeps) and the net of auduno/deepdraw
(bvlc_googlenet with the heads' classifiers, :func:`deepdraw_googlenet`).
tests/test_googlenet.py checks, layer by layer, that ``googlenet(1000)`` equals the deploy
file of the verified Caffe source, and ``deepdraw_googlenet()`` deepdraw's
deploy_googlenet_updated.prototxt.
"""

from __future__ import annotations

# Per inception module: #1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool projection
# (Szegedy et al. 2014, table 1; the same numbers as deploy.prototxt).
INCEPTION = {
    "3a": (64, 96, 128, 16, 32, 32),
    "3b": (128, 128, 192, 32, 96, 64),
    "4a": (192, 96, 208, 16, 48, 64),
    "4b": (160, 112, 224, 24, 64, 64),
    "4c": (128, 128, 256, 24, 64, 64),
    "4d": (112, 144, 288, 32, 64, 64),
    "4e": (256, 160, 320, 32, 128, 128),
    "5a": (256, 160, 320, 32, 128, 128),
    "5b": (384, 192, 384, 48, 128, 128),
}
# Modules followed by a stride-2 max pool, and the pool's name.
POOL_AFTER = {"3b": "pool3/3x3_s2", "4e": "pool4/3x3_s2"}
# The auxiliary classifiers of the training net, hanging off these modules.
AUX_HEADS = {"4a": "loss1", "4d": "loss2"}


def googlenet(
    num_classes: int = 1000,
    aux_heads: bool = False,
    input_shape=(10, 3, 224, 224),
    aux_style: str = "places205",
):
    """Return the GoogLeNet deploy definition as a ``caffe_pb2.NetParameter``.

    ``aux_heads`` adds the loss1/loss2 classifiers (ave-pool 5/3, 1x1 conv 128, fc 1024,
    dropout 0.7, fc ``num_classes``, softmax) as the Places205 deploy file keeps them;
    ``aux_style="deepdraw"`` writes them as deepdraw's file does: no softmax, and xavier
    fillers without the ``std`` (fillers only matter for training; no weight changes).
    """
    deepdraw = aux_style == "deepdraw"
    from .definition import import_caffe

    caffe = import_caffe()
    NetSpec, L, P = caffe.NetSpec, caffe.layers, caffe.params

    n = NetSpec()

    def conv(name, bottom, num_output, kernel, std, pad=0, stride=1):
        param = dict(
            num_output=num_output,
            kernel_size=kernel,
            weight_filler=dict(type="xavier") if std is None else dict(type="xavier", std=std),
            bias_filler=dict(type="constant", value=0.2),
        )
        if pad:
            param["pad"] = pad
        if stride != 1:
            param["stride"] = stride
        n[name] = L.Convolution(
            bottom,
            param=[dict(lr_mult=1, decay_mult=1), dict(lr_mult=2, decay_mult=0)],
            convolution_param=param,
        )
        return n[name]

    def conv_relu(name, relu, bottom, *args, **kwargs):
        top = conv(name, bottom, *args, **kwargs)
        n[relu] = L.ReLU(top, in_place=True)
        return top

    def max_pool(name, bottom, kernel, stride, pad=0):
        kwargs = dict(pool=P.Pooling.MAX, kernel_size=kernel, stride=stride)
        if pad:
            kwargs["pad"] = pad
        n[name] = L.Pooling(bottom, **kwargs)
        return n[name]

    def lrn(name, bottom):
        n[name] = L.LRN(bottom, local_size=5, alpha=0.0001, beta=0.75)
        return n[name]

    def fc(name, bottom, num_output, std=None, bias=0.0):
        filler = dict(type="xavier") if std is None else dict(type="xavier", std=std)
        n[name] = L.InnerProduct(
            bottom,
            param=[dict(lr_mult=1, decay_mult=1), dict(lr_mult=2, decay_mult=0)],
            inner_product_param=dict(
                num_output=num_output,
                weight_filler=filler,
                bias_filler=dict(type="constant", value=bias),
            ),
        )
        return n[name]

    def inception(m, bottom):
        c1, c3r, c3, c5r, c5, cp = INCEPTION[m]
        p = f"inception_{m}/"
        b1 = conv_relu(p + "1x1", p + "relu_1x1", bottom, c1, 1, 0.03)
        b3 = conv_relu(p + "3x3_reduce", p + "relu_3x3_reduce", bottom, c3r, 1, 0.09)
        b3 = conv_relu(p + "3x3", p + "relu_3x3", b3, c3, 3, 0.03, pad=1)
        b5 = conv_relu(p + "5x5_reduce", p + "relu_5x5_reduce", bottom, c5r, 1, 0.2)
        b5 = conv_relu(p + "5x5", p + "relu_5x5", b5, c5, 5, 0.03, pad=2)
        bp = max_pool(p + "pool", bottom, 3, 1, pad=1)
        bp = conv_relu(p + "pool_proj", p + "relu_pool_proj", bp, cp, 1, 0.1)
        n[p + "output"] = L.Concat(b1, b3, b5, bp)
        return n[p + "output"]

    def aux_head(h, bottom):
        n[h + "/ave_pool"] = L.Pooling(bottom, pool=P.Pooling.AVE, kernel_size=5, stride=3)
        std = (None, None) if deepdraw else (0.08, 0.02)
        x = conv_relu(h + "/conv", h + "/relu_conv", n[h + "/ave_pool"], 128, 1, std[0])
        x = fc(h + "/fc", x, 1024, std=std[1], bias=0.2)
        n[h + "/relu_fc"] = L.ReLU(x, in_place=True)
        n[h + "/drop_fc"] = L.Dropout(x, dropout_ratio=0.7, in_place=True)
        x = fc(h + "/classifier", x, num_classes)
        if not deepdraw:
            n[h + "/prob"] = L.Softmax(x)

    n["data"] = L.Input(shape=dict(dim=list(input_shape)))
    x = conv_relu("conv1/7x7_s2", "conv1/relu_7x7", n["data"], 64, 7, 0.1, pad=3, stride=2)
    x = lrn("pool1/norm1", max_pool("pool1/3x3_s2", x, 3, 2))
    x = conv_relu("conv2/3x3_reduce", "conv2/relu_3x3_reduce", x, 64, 1, 0.1)
    x = conv_relu("conv2/3x3", "conv2/relu_3x3", x, 192, 3, 0.03, pad=1)
    x = max_pool("pool2/3x3_s2", lrn("conv2/norm2", x), 3, 2)
    for m in INCEPTION:
        x = inception(m, x)
        if aux_heads and m in AUX_HEADS:
            aux_head(AUX_HEADS[m], x)
        if m in POOL_AFTER:
            x = max_pool(POOL_AFTER[m], x, 3, 2)
    n["pool5/7x7_s1"] = L.Pooling(x, pool=P.Pooling.AVE, kernel_size=7, stride=1)
    n["pool5/drop_7x7_s1"] = L.Dropout(n["pool5/7x7_s1"], dropout_ratio=0.4, in_place=True)
    x = fc("loss3/classifier", n["pool5/7x7_s1"], num_classes)
    n["prob"] = L.Softmax(x)

    net = n.to_proto()
    net.name = "GoogleNet"
    return net


def deepdraw_googlenet():
    """auduno/deepdraw's deploy_googlenet_updated.prototxt: bvlc_googlenet with the auxiliary
    classifiers loss1/classifier and loss2/classifier (whose weights the published
    bvlc_googlenet.caffemodel holds), ``force_backward``, the input declared with
    ``input_dim`` (which Caffe's upgrade names the layer ``input``)."""
    net = googlenet(1000, aux_heads=True, aux_style="deepdraw")
    net.layer[0].name = "input"
    net.force_backward = True
    return net
