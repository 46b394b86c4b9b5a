"""A stand-in for classify_image_graph_def.pb with the real file's interface, and a numpy reference for it.

The real graph cannot be had offline, so the stand-in reproduces what the loader relies on: the node names and
op types of its input chain (DecodeJpeg -> Cast -> ExpandDims -> ResizeBilinear -> Sub -> Mul), a pre-version-9
GraphDef with BatchNormWithGlobalNormalization, CheckNumerics and control dependencies, `pool_3` with a reshape
fixed to batch 1, and 2048 x 1008 softmax weights behind `softmax/logits/MatMul`. Its body is small (one 8x8
convolution on a patch of the resized image), so the numpy reference is exact.
"""
import numpy as np
import tensorflow as tf
from tensorflow.core.framework import attr_value_pb2, graph_pb2

PATCH = (100, 150)  # top-left corner of the 8x8 patch of the 299x299 image the stand-in's convolution sees
EPS = 1e-3


def _attr(**kw):
    return attr_value_pb2.AttrValue(**kw)


def standin_graph(seed=0):
    rng = np.random.default_rng(seed)
    params = {"conv": rng.normal(0, 0.05, (8, 8, 3, 2048)).astype(np.float32),
              "mean": rng.normal(0, 0.1, 2048).astype(np.float32),
              "var": rng.uniform(0.5, 2.0, 2048).astype(np.float32),
              "beta": rng.normal(0, 0.1, 2048).astype(np.float32),
              "gamma": rng.uniform(0.5, 1.5, 2048).astype(np.float32),
              "w": rng.normal(0, 0.3, (2048, 1008)).astype(np.float32),
              "b": rng.normal(0, 5.0, 1008).astype(np.float32)}
    g = graph_pb2.GraphDef()
    g.versions.producer = 5  # before BatchNormWithGlobalNormalization was removed (version 9)
    f32, i32, u8 = (_attr(type=t.as_datatype_enum) for t in (tf.float32, tf.int32, tf.uint8))

    def node(name, op, inputs=(), **attrs):
        n = g.node.add(name=name, op=op, input=list(inputs))
        for k, v in attrs.items():
            n.attr[k].CopyFrom(v)

    def const(name, value):
        t = tf.make_tensor_proto(value)
        node(name, "Const", value=_attr(tensor=t), dtype=_attr(type=t.dtype))

    const("DecodeJpeg/contents", b"")
    node("DecodeJpeg", "DecodeJpeg", ["DecodeJpeg/contents"], channels=_attr(i=3))
    node("Cast", "Cast", ["DecodeJpeg"], SrcT=u8, DstT=f32)
    const("ExpandDims/dim", np.int32(0))
    node("ExpandDims", "ExpandDims", ["Cast", "ExpandDims/dim"], T=f32, Tdim=i32)
    const("ResizeBilinear/size", np.array([299, 299], np.int32))
    node("ResizeBilinear", "ResizeBilinear", ["ExpandDims", "ResizeBilinear/size"], T=f32,
         align_corners=_attr(b=False))
    const("Sub/y", np.float32(128.0))
    node("Sub", "Sub", ["ResizeBilinear", "Sub/y"], T=f32)
    const("Mul/y", np.float32(1 / 128))
    node("Mul", "Mul", ["Sub", "Mul/y"], T=f32)
    const("patch/begin", np.array([0, PATCH[0], PATCH[1], 0], np.int32))
    const("patch/size", np.array([-1, 8, 8, 3], np.int32))
    node("patch", "Slice", ["Mul", "patch/begin", "patch/size"], T=f32, Index=i32)
    const("conv/conv2d_params", params["conv"])
    node("conv/Conv2D", "Conv2D", ["patch", "conv/conv2d_params"], T=f32,
         strides=_attr(list=attr_value_pb2.AttrValue.ListValue(i=[1, 1, 1, 1])), padding=_attr(s=b"VALID"))
    for name, key in (("beta", "beta"), ("gamma", "gamma"), ("moving_mean", "mean"), ("moving_variance", "var")):
        const("conv/batchnorm/" + name, params[key])
    node("conv/batchnorm", "BatchNormWithGlobalNormalization",
         ["conv/Conv2D", "conv/batchnorm/moving_mean", "conv/batchnorm/moving_variance", "conv/batchnorm/beta",
          "conv/batchnorm/gamma"], T=f32, variance_epsilon=_attr(f=EPS), scale_after_normalization=_attr(b=True))
    node("conv/CheckNumerics", "CheckNumerics", ["conv/batchnorm"], T=f32, message=_attr(s=b"conv"))
    node("conv/control_dependency", "Identity", ["conv/batchnorm", "^conv/CheckNumerics"], T=f32)
    node("conv", "Relu", ["conv/control_dependency"], T=f32)
    ones = _attr(list=attr_value_pb2.AttrValue.ListValue(i=[1, 1, 1, 1]))
    node("pool_3", "AvgPool", ["conv"], T=f32, ksize=ones, strides=ones, padding=_attr(s=b"VALID"))
    const("pool_3/_reshape/shape", np.array([1, 2048], np.int32))
    node("pool_3/_reshape", "Reshape", ["pool_3", "pool_3/_reshape/shape"], T=f32, Tshape=i32)
    const("softmax/weights", params["w"])
    const("softmax/biases", params["b"])
    node("softmax/logits/MatMul", "MatMul", ["pool_3/_reshape", "softmax/weights"], T=f32)
    node("softmax/logits", "BiasAdd", ["softmax/logits/MatMul", "softmax/biases"], T=f32)
    node("softmax", "Softmax", ["softmax/logits"], T=f32)
    return g, params


def _tf1_bilinear(images, out, half_pixel=False):
    """Reference resize: TF 1 maps output pixel i to input i * in/out (no half-pixel shift), edge-clamped."""
    def axis(n):
        i = np.arange(out, dtype=np.float64)
        src = (i + 0.5) * n / out - 0.5 if half_pixel else i * n / out
        src = np.clip(src, 0, None)
        lo = np.minimum(np.floor(src).astype(int), n - 1)
        return lo, np.minimum(lo + 1, n - 1), src - lo

    y0, y1, fy = axis(images.shape[1])
    x0, x1, fx = axis(images.shape[2])
    rows = images[:, y0] * (1 - fy)[None, :, None, None] + images[:, y1] * fy[None, :, None, None]
    return rows[:, :, x0] * (1 - fx)[None, None, :, None] + rows[:, :, x1] * fx[None, None, :, None]


def reference(images, params, half_pixel=False, quantise=True):
    x = np.clip((images.astype(np.float64) + 1) * 127.5, 0, 255)
    x = np.round(x) if quantise else x  # uint8 quantisation
    if x.shape[-1] == 1:
        x = np.repeat(x, 3, axis=-1)
    x = (_tf1_bilinear(x, 299, half_pixel) - 128.0) / 128.0
    patch = x[:, PATCH[0]:PATCH[0] + 8, PATCH[1]:PATCH[1] + 8, :]
    conv = np.einsum("nhwc,hwck->nk", patch, params["conv"].astype(np.float64))
    bn = (conv - params["mean"]) / np.sqrt(params["var"] + np.float64(np.float32(EPS))) * params["gamma"]
    feats = np.maximum(bn + params["beta"], 0.0)
    logits = feats @ params["w"].astype(np.float64)  # no bias, as the original IS code
    probs = np.exp(logits - logits.max(1, keepdims=True))
    return feats, probs / probs.sum(1, keepdims=True)
