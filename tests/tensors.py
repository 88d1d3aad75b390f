"""Building tritonclient inputs/outputs for the example models, for the HTTP and gRPC clients alike."""

import numpy as np
import tritonclient.http as httpclient
from tritonclient.utils import np_to_triton_dtype

# Example model -> numpy type of its INPUT0/INPUT1/OUTPUT0/OUTPUT1.
ADD_SUB_MODELS = {"simple": np.int32, "simple_int8": np.int8, "simple_fp32": np.float32}


def infer_inputs(module, arrays, binary=True):
    """[module.InferInput] for {name: numpy array}; `module` is tritonclient.http or .grpc."""
    result = []
    for name, array in arrays.items():
        inp = module.InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
        if module.InferInput is httpclient.InferInput:  # also tritonclient.http.aio
            inp.set_data_from_numpy(array, binary_data=binary)
        else:
            inp.set_data_from_numpy(array)
        result.append(inp)
    return result


def requested_outputs(module, names, binary=None, class_count=0):
    result = []
    for name in names:
        kwargs = {"class_count": class_count}
        if binary is not None:
            kwargs["binary_data"] = binary
        result.append(module.InferRequestedOutput(name, **kwargs))
    return result


def add_sub_operands(dtype=np.int32, batch=1, seed=0, low=-100, high=100):
    rng = np.random.default_rng(seed)
    a = rng.integers(low, high, size=(batch, 16)).astype(dtype)
    b = rng.integers(low, high, size=(batch, 16)).astype(dtype)
    return a, b


def add_sub_inputs(module, dtype=np.int32, batch=1, seed=0, binary=True):
    """(inputs, a, b) for simple / simple_int8 / simple_fp32."""
    a, b = add_sub_operands(dtype, batch, seed)
    return infer_inputs(module, {"INPUT0": a, "INPUT1": b}, binary), a, b


def check_add_sub(result, a, b, outputs=("OUTPUT0", "OUTPUT1")):
    expected = {"OUTPUT0": a + b, "OUTPUT1": a - b}
    for name in outputs:
        got = result.as_numpy(name)
        assert got is not None, "output %s missing from the response" % name
        assert got.dtype == a.dtype, (name, got.dtype, a.dtype)
        np.testing.assert_array_equal(got, expected[name])


def string_operands(batch=1, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.integers(-1000, 1000, size=(batch, 16))
    b = rng.integers(-1000, 1000, size=(batch, 16))
    as_bytes = lambda x: np.array([[str(v).encode() for v in row] for row in x], dtype=np.object_)
    return as_bytes(a), as_bytes(b), a, b


def check_string_add_sub(result, a, b):
    for name, expected in (("OUTPUT0", a + b), ("OUTPUT1", a - b)):
        got = result.as_numpy(name)
        assert got is not None, "output %s missing" % name
        assert [[int(v) for v in row] for row in got] == expected.tolist()

