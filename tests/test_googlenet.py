"""The NetSpec builder against Caffe's shipped bvlc_googlenet deploy.prototxt."""

import pytest
from conftest import deepdraw_file

from deepdream_caffe.build import caffe_source_dir
from deepdream_caffe.definition import dream_layers, prune, read_definition
from deepdream_caffe.googlenet import googlenet

pytestmark = pytest.mark.caffe


def shipped():
    return read_definition(caffe_source_dir() / "models/bvlc_googlenet/deploy.prototxt")


def test_builder_equals_shipped_deploy_layer_by_layer():
    ours, theirs = googlenet(1000), shipped()
    assert [layer.name for layer in ours.layer] == [layer.name for layer in theirs.layer]
    for a, b in zip(ours.layer, theirs.layer, strict=True):
        assert a == b, f"layer {a.name} differs:\n{a}\nvs\n{b}"
    assert ours == theirs


def test_places_variant_has_205_classes_and_aux_heads():
    net = googlenet(205, aux_heads=True)
    fc = {layer.name: layer for layer in net.layer if layer.type == "InnerProduct"}
    assert {
        fc[n].inner_product_param.num_output
        for n in ("loss1/classifier", "loss2/classifier", "loss3/classifier")
    } == {205}


def test_prune_keeps_exactly_the_ancestors():
    net = googlenet(205, aux_heads=True)
    names = [layer.name for layer in prune(net, "inception_3b/5x5_reduce").layer]
    assert names[-1] == "inception_3b/5x5_reduce"
    assert "inception_3b/relu_5x5_reduce" not in names  # pre-ReLU, as the notebook
    assert "inception_3b/1x1" not in names and "loss1/fc" not in names
    assert "inception_3a/relu_1x1" in names and "conv1/relu_7x7" in names
    deep = [layer.name for layer in prune(net, "inception_4c/output").layer]
    assert not any(n.startswith("loss") for n in deep)


def test_dream_layers_mark_pre_relu_blobs():
    layers = {info.name: info for info in dream_layers(shipped())}
    assert layers["inception_3b/5x5_reduce"].pre_relu
    assert not layers["inception_4c/output"].pre_relu
    assert "conv1/relu_7x7" not in layers and "data" not in layers


def test_deepdraw_net_equals_deepdraws_prototxt_layer_by_layer():
    """deepdraw's definition (read through the mirror, never committed) is the builder's."""
    from deepdream_caffe.googlenet import deepdraw_googlenet

    path = deepdraw_file("deploy_googlenet_updated.prototxt")
    ours, theirs = deepdraw_googlenet(), read_definition(path)
    assert [layer.name for layer in ours.layer] == [layer.name for layer in theirs.layer]
    for a, b in zip(ours.layer, theirs.layer, strict=True):
        assert a == b, f"layer {a.name} differs:\n{a}\nvs\n{b}"
    assert ours == theirs
