"""The 2015-12-05 TF Inception graph (the network behind published IS/FID numbers), run in TF 2.

The file is `classify_image_graph_def.pb`, a frozen TF 1 GraphDef inside `inception-2015-12-05.tgz`; either the
archive or the extracted .pb may be given. Nothing is downloaded. The pipeline is the one of Salimans et al.'s
Inception Score code (used by SN-GAN) and of TTUR's FID code:

  uint8 images, fed as float32 0..255 at the graph's `ExpandDims:0`
  -> the graph's own ResizeBilinear to 299x299 (TF 1 semantics: align_corners=False, no half-pixel centres)
  -> (x - 128) / 128 (the graph's Sub and Mul) -> Inception -> `pool_3:0` (2048 features, used by FID)
  -> probabilities = softmax(pool_3 @ W) with W the 2048 x 1008 weights of `softmax/logits/MatMul` and, as in
     the original IS code, no bias.

The graph predates GraphDef version 9 and uses `BatchNormWithGlobalNormalization`, which TF 2 refuses to run
inside a function. `upgrade_graph_def` rewrites each such node into the same arithmetic with current ops.
"""
from __future__ import annotations

import tarfile
import zlib

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import attr_value_pb2, graph_pb2, node_def_pb2
from tensorflow.python.framework import op_def_registry  # the registry of op definitions; no public alias

GRAPH_FILE = "classify_image_graph_def.pb"
ARCHIVE_FILE = "inception-2015-12-05.tgz"
SOURCE_URL = "http://download.tensorflow.org/models/image/imagenet/" + ARCHIVE_FILE
INPUT_TENSOR = "ExpandDims:0"
POOL_TENSOR = "pool_3:0"
LOGITS_MATMUL = "softmax/logits/MatMul"
RESIZE_SIZE = "ResizeBilinear/size"
IMAGE_SIZE = 299
FEATURE_DIM = 2048
NUM_LOGITS = 1008  # 1000 ImageNet classes + 8 unused


class InceptionGraphError(ValueError):
    """The file is not (a usable copy of) the 2015-12-05 Inception graph."""


def read_graph_def(path):
    """GraphDef from `classify_image_graph_def.pb` or from the `inception-2015-12-05.tgz` holding it."""
    if path.endswith((".tgz", ".tar.gz", ".tar")) or tarfile.is_tarfile(path):
        try:
            with tarfile.open(path) as tar:  # read the one member in memory; nothing is extracted to disk
                members = [m for m in tar.getmembers() if m.isfile() and m.name.split("/")[-1] == GRAPH_FILE]
                raw = tar.extractfile(members[0]).read() if members else None
        except (tarfile.TarError, EOFError, OSError, zlib.error) as e:
            raise InceptionGraphError(f"{path} is a damaged archive ({e}); download {ARCHIVE_FILE} again from "
                                      f"{SOURCE_URL}.") from None
        if raw is None:
            raise InceptionGraphError(f"{path} is an archive without {GRAPH_FILE}; expected {ARCHIVE_FILE} "
                                      f"from {SOURCE_URL}.")
    else:
        with open(path, "rb") as f:
            raw = f.read()
    graph_def = graph_pb2.GraphDef()
    try:
        graph_def.ParseFromString(raw)
    except Exception as e:  # protobuf raises its own DecodeError
        raise InceptionGraphError(f"{path} is not a TensorFlow GraphDef ({e}); expected {GRAPH_FILE} or "
                                  f"{ARCHIVE_FILE} from {SOURCE_URL}.") from None
    return graph_def


def _nodes(graph_def):
    return {n.name: n for n in graph_def.node}


def _const_value(nodes, name):
    """Value of a Const node, following Identity nodes; None when it is not a constant."""
    node = nodes.get(name.split(":")[0].lstrip("^"))
    while node is not None and node.op == "Identity":
        node = nodes.get(node.input[0].split(":")[0])
    if node is None or node.op != "Const":
        return None
    return tf.make_ndarray(node.attr["value"].tensor)


def check_structure(graph_def, path="the graph"):
    """Raise InceptionGraphError unless the graph has the 2015-12-05 Inception's interface and shapes."""
    nodes = _nodes(graph_def)
    missing = [n for n in (INPUT_TENSOR.split(":")[0], "ResizeBilinear", RESIZE_SIZE, POOL_TENSOR.split(":")[0],
                           LOGITS_MATMUL) if n not in nodes]
    if missing:
        raise InceptionGraphError(f"{path} lacks the nodes {missing}: not the 2015-12-05 Inception graph "
                                  f"({GRAPH_FILE} from {SOURCE_URL}).")
    size = _const_value(nodes, RESIZE_SIZE)
    if size is None or list(size) != [IMAGE_SIZE, IMAGE_SIZE]:
        raise InceptionGraphError(f"{path} resizes to {size}, not {IMAGE_SIZE}x{IMAGE_SIZE}: not the 2015-12-05 "
                                  "Inception graph.")
    weights = _const_value(nodes, nodes[LOGITS_MATMUL].input[1])
    if weights is None or weights.shape != (FEATURE_DIM, NUM_LOGITS):
        shape = None if weights is None else weights.shape
        raise InceptionGraphError(f"{path}: the softmax weights have shape {shape}, expected "
                                  f"({FEATURE_DIM}, {NUM_LOGITS}): not the 2015-12-05 Inception graph.")


def _attr_const(name, value, dtype):
    node = node_def_pb2.NodeDef(name=name, op="Const")
    tensor = tf.make_tensor_proto(np.asarray(value, dtype=dtype.as_numpy_dtype))
    node.attr["value"].CopyFrom(attr_value_pb2.AttrValue(tensor=tensor))
    node.attr["dtype"].CopyFrom(attr_value_pb2.AttrValue(type=dtype.as_datatype_enum))
    return node


def _binary(name, op, a, b, type_attr, controls=()):
    node = node_def_pb2.NodeDef(name=name, op=op, input=[a, b, *controls])
    node.attr["T"].CopyFrom(type_attr)
    return node


def _rewrite_global_normalization(node):
    """BatchNormWithGlobalNormalization(t, m, v, beta, gamma) as (t - m) * rsqrt(v + eps) [* gamma] + beta."""
    t, m, v, beta, gamma = node.input[:5]
    controls = list(node.input[5:])
    type_attr = node.attr["T"]
    dtype = tf.as_dtype(type_attr.type)
    p = node.name + "/upgraded"
    out = [_attr_const(p + "/epsilon", node.attr["variance_epsilon"].f, dtype),
           _binary(p + "/var_eps", "AddV2", v, p + "/epsilon", type_attr)]
    rsqrt = node_def_pb2.NodeDef(name=p + "/rsqrt", op="Rsqrt", input=[p + "/var_eps"])
    rsqrt.attr["T"].CopyFrom(type_attr)
    out.append(rsqrt)
    scale = p + "/rsqrt"
    if node.attr["scale_after_normalization"].b:
        out.append(_binary(p + "/scale", "Mul", scale, gamma, type_attr))
        scale = p + "/scale"
    out.append(_binary(p + "/centred", "Sub", t, m, type_attr))
    out.append(_binary(p + "/normalised", "Mul", p + "/centred", scale, type_attr))
    out.append(_binary(node.name, "AddV2", p + "/normalised", beta, type_attr, controls))  # keeps the name
    return out


def upgrade_graph_def(graph_def):
    """A copy runnable by TF 2 functions: removed ops rewritten; any other removed op is a clear error."""
    upgraded = graph_pb2.GraphDef()
    upgraded.versions.CopyFrom(graph_def.versions)
    upgraded.library.CopyFrom(graph_def.library)
    for node in graph_def.node:
        if node.op == "BatchNormWithGlobalNormalization":
            upgraded.node.extend(_rewrite_global_normalization(node))
            continue
        op_def = op_def_registry.get(node.op)
        if op_def is None or 0 < op_def.deprecation.version <= tf.version.GRAPH_DEF_VERSION:
            raise InceptionGraphError(f"node {node.name!r} uses op {node.op!r}, which this TensorFlow "
                                      f"({tf.__version__}) cannot run; robgan_tf does not know how to rewrite it.")
        upgraded.node.add().CopyFrom(node)
    return upgraded


class Inception2015:
    """Callable: uint8-valued float32 images [N, H, W, 3] (0..255) -> (pool_3 features [N, 2048],
    probabilities [N, 1008])."""

    def __init__(self, graph_def):
        graph_def = upgrade_graph_def(graph_def)

        def run(images):
            pool3, matmul = tf.compat.v1.import_graph_def(
                graph_def, input_map={INPUT_TENSOR: images}, return_elements=[POOL_TENSOR, LOGITS_MATMUL],
                name="inception_2015")
            features = tf.reshape(pool3, [-1, FEATURE_DIM])  # the graph's own reshape is fixed to batch 1
            logits = tf.matmul(features, matmul.inputs[1])  # no bias, as in the original IS code
            return features, tf.nn.softmax(logits)

        self._fn = tf.compat.v1.wrap_function(run, [tf.TensorSpec([None, None, None, 3], tf.float32)])

    def __call__(self, images):
        return self._fn(tf.convert_to_tensor(images, tf.float32))
