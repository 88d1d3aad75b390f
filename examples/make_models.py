#!/usr/bin/env python3
"""Build the ONNX files of the example model repository.

The config.pbtxt files under model_repository/ are committed; this script writes each model's
`<name>/1/model.onnx` (gitignored) next to them, then runs every model once with ONNX Runtime
and checks the outputs against numpy, so a broken generator fails here and not in the server.

Idempotent: a file whose bytes are already right is left alone (its mtime too, which matters to
a server polling the repository). Run by scripts/setup.

    python examples/make_models.py [--repository DIR] [--no-check]

Also used as a library by the Python tests, which build variants of these models in temporary
repositories (see the build_* functions).
"""

import argparse
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper

# Opset 15 and IR version 8 are old enough for any recent ONNX Runtime and new enough for every
# operator used here.
OPSET = 15
IR_VERSION = 8

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_REPOSITORY = os.path.join(HERE, "model_repository")


def _model(name, nodes, inputs, outputs):
    return _finish(helper.make_graph(nodes, name, inputs, outputs))


def _finish(graph):
    model = helper.make_model(
        graph,
        producer_name="nereid-examples",
        opset_imports=[helper.make_opsetid("", OPSET)],
        ir_version=IR_VERSION,
    )
    onnx.checker.check_model(model, full_check=True)
    return model


def _tensor(name, elem_type, shape):
    return helper.make_tensor_value_info(name, elem_type, shape)


def build_add_sub(name, elem_type, dims=(16,), batching=True, swap=False):
    """OUTPUT0 = INPUT0 + INPUT1, OUTPUT1 = INPUT0 - INPUT1 (swapped when swap=True).

    The interface of Triton's `simple` example; with batching the first dimension is the batch.
    """
    shape = (["batch"] if batching else []) + list(dims)
    add, sub = ("OUTPUT1", "OUTPUT0") if swap else ("OUTPUT0", "OUTPUT1")
    return _model(
        name,
        [
            helper.make_node("Add", ["INPUT0", "INPUT1"], [add]),
            helper.make_node("Sub", ["INPUT0", "INPUT1"], [sub]),
        ],
        [_tensor("INPUT0", elem_type, shape), _tensor("INPUT1", elem_type, shape)],
        [_tensor("OUTPUT0", elem_type, shape), _tensor("OUTPUT1", elem_type, shape)],
    )


def build_string_add_sub(name="simple_string"):
    """Triton's simple_string: strings holding integers; OUTPUT0/1 are their sum/difference as strings."""
    shape = ["batch", 16]
    return _model(
        name,
        [
            helper.make_node("Cast", ["INPUT0"], ["a"], to=TensorProto.INT32),
            helper.make_node("Cast", ["INPUT1"], ["b"], to=TensorProto.INT32),
            helper.make_node("Add", ["a", "b"], ["sum"]),
            helper.make_node("Sub", ["a", "b"], ["difference"]),
            helper.make_node("Cast", ["sum"], ["OUTPUT0"], to=TensorProto.STRING),
            helper.make_node("Cast", ["difference"], ["OUTPUT1"], to=TensorProto.STRING),
        ],
        [_tensor("INPUT0", TensorProto.STRING, shape), _tensor("INPUT1", TensorProto.STRING, shape)],
        [_tensor("OUTPUT0", TensorProto.STRING, shape), _tensor("OUTPUT1", TensorProto.STRING, shape)],
    )


def build_identity(name="simple_identity", elem_type=TensorProto.FLOAT):
    """OUTPUT0 = INPUT0, any length, with a batch dimension."""
    shape = ["batch", "n"]
    return _model(
        name,
        [helper.make_node("Identity", ["INPUT0"], ["OUTPUT0"])],
        [_tensor("INPUT0", elem_type, shape)],
        [_tensor("OUTPUT0", elem_type, shape)],
    )


def build_sequence(name="simple_sequence"):
    """Stateless stand-in for Triton's simple_sequence: OUTPUT = INPUT * READY + START.

    START and READY are the sequence batcher's control tensors (0 or 1), so the first request of
    a sequence returns INPUT + 1 and later ones return INPUT; no accumulator is kept.
    """
    shape = ["batch", 1]
    return _model(
        name,
        [
            helper.make_node("Mul", ["INPUT", "READY"], ["gated"]),
            helper.make_node("Add", ["gated", "START"], ["OUTPUT"]),
        ],
        [
            _tensor("INPUT", TensorProto.INT32, shape),
            _tensor("START", TensorProto.INT32, shape),
            _tensor("READY", TensorProto.INT32, shape),
        ],
        [_tensor("OUTPUT", TensorProto.INT32, shape)],
    )


def build_slow(name="slow", matrix=64):
    """OUTPUT0 = INPUT0 after ITERS rounds of a matrix product, for tests that need a request to
    stay in flight for a while. INPUT0 FP32 [16], ITERS INT64 [1]; no batch dimension."""
    w = np.full((matrix, matrix), 1.0 / matrix, dtype=np.float32)
    body = helper.make_graph(
        [
            helper.make_node("MatMul", ["x_in", "W"], ["prod"]),
            helper.make_node("Tanh", ["prod"], ["x_out"]),
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
        ],
        "body",
        [
            _tensor("i", TensorProto.INT64, []),
            _tensor("cond_in", TensorProto.BOOL, []),
            _tensor("x_in", TensorProto.FLOAT, [matrix, matrix]),
        ],
        [
            _tensor("cond_out", TensorProto.BOOL, []),
            _tensor("x_out", TensorProto.FLOAT, [matrix, matrix]),
        ],
    )
    graph = helper.make_graph(
        [
            helper.make_node("Reshape", ["ITERS", "scalar"], ["trip_count"]),
            helper.make_node("Loop", ["trip_count", "true", "x0"], ["x_final"], body=body),
            # Keep the loop on the output's path: OUTPUT0 = INPUT0 + 0 * sum(x_final).
            helper.make_node("ReduceSum", ["x_final"], ["total"], keepdims=0),
            helper.make_node("Mul", ["total", "zero"], ["nothing"]),
            helper.make_node("Add", ["INPUT0", "nothing"], ["OUTPUT0"]),
        ],
        name,
        [_tensor("INPUT0", TensorProto.FLOAT, [16]), _tensor("ITERS", TensorProto.INT64, [1])],
        [_tensor("OUTPUT0", TensorProto.FLOAT, [16])],
        initializer=[
            helper.make_tensor("W", TensorProto.FLOAT, w.shape, w.flatten().tolist()),
            helper.make_tensor("x0", TensorProto.FLOAT, w.shape, np.ones(w.size).tolist()),
            helper.make_tensor("true", TensorProto.BOOL, [], [True]),
            helper.make_tensor("scalar", TensorProto.INT64, [0], []),
            helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0]),
        ],
    )
    return _finish(graph)


# name -> builder of the example repository. Each model is written to <name>/1/model.onnx.
EXAMPLES = {
    "simple": lambda: build_add_sub("simple", TensorProto.INT32),
    "simple_int8": lambda: build_add_sub("simple_int8", TensorProto.INT8),
    "simple_fp32": lambda: build_add_sub("simple_fp32", TensorProto.FLOAT),
    "simple_string": build_string_add_sub,
    "simple_identity": build_identity,
    "simple_sequence": build_sequence,
}


def write_model(model, path):
    """Write `model` to `path` unless the file already holds the same bytes. Returns True if written."""
    data = model.SerializeToString(deterministic=True)
    try:
        with open(path, "rb") as f:
            if f.read() == data:
                return False
    except FileNotFoundError:
        pass
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)
    return True


def _run(model, feeds):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, feeds)))


def check(name, model):
    """Run `model` once in ONNX Runtime and compare with numpy; raises AssertionError on mismatch."""
    rng = np.random.default_rng(0)
    if name in ("simple", "simple_int8", "simple_fp32"):
        dtype = {"simple": np.int32, "simple_int8": np.int8, "simple_fp32": np.float32}[name]
        a = rng.integers(-50, 50, size=(3, 16)).astype(dtype)
        b = rng.integers(-50, 50, size=(3, 16)).astype(dtype)
        out = _run(model, {"INPUT0": a, "INPUT1": b})
        np.testing.assert_array_equal(out["OUTPUT0"], a + b)
        np.testing.assert_array_equal(out["OUTPUT1"], a - b)
        assert out["OUTPUT0"].dtype == dtype
    elif name == "simple_string":
        a = rng.integers(-1000, 1000, size=(2, 16))
        b = rng.integers(-1000, 1000, size=(2, 16))
        out = _run(model, {"INPUT0": a.astype(str).astype(object), "INPUT1": b.astype(str).astype(object)})
        assert out["OUTPUT0"].tolist() == (a + b).astype(str).tolist()
        assert out["OUTPUT1"].tolist() == (a - b).astype(str).tolist()
    elif name == "simple_identity":
        a = rng.standard_normal((2, 7)).astype(np.float32)
        np.testing.assert_array_equal(_run(model, {"INPUT0": a})["OUTPUT0"], a)
    elif name == "simple_sequence":
        x = np.array([[5], [7], [-3]], dtype=np.int32)
        start = np.array([[1], [0], [0]], dtype=np.int32)
        ready = np.array([[1], [1], [0]], dtype=np.int32)
        out = _run(model, {"INPUT": x, "START": start, "READY": ready})["OUTPUT"]
        np.testing.assert_array_equal(out, x * ready + start)
    elif name == "slow":
        a = rng.standard_normal(16).astype(np.float32)
        out = _run(model, {"INPUT0": a, "ITERS": np.array([3], dtype=np.int64)})["OUTPUT0"]
        np.testing.assert_array_equal(out, a)
    else:
        raise KeyError(name)


def make_repository(repository=DEFAULT_REPOSITORY, verify=True, names=None):
    """Write the example models into `repository` (whose config.pbtxt files must exist)."""
    written = []
    for name in names or sorted(EXAMPLES):
        if not os.path.isfile(os.path.join(repository, name, "config.pbtxt")):
            raise FileNotFoundError("missing %s/config.pbtxt in %s" % (name, repository))
        model = EXAMPLES[name]()
        if verify:
            check(name, model)
        if write_model(model, os.path.join(repository, name, "1", "model.onnx")):
            written.append(name)
    return written


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repository", default=DEFAULT_REPOSITORY, help="model repository to fill")
    parser.add_argument("--no-check", action="store_true", help="skip the ONNX Runtime self-check")
    args = parser.parse_args(argv)
    written = make_repository(args.repository, verify=not args.no_check)
    print("make_models: %s (%s)" % (
        ", ".join(written) + " written" if written else "up to date",
        "not checked" if args.no_check else "checked with ONNX Runtime"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
