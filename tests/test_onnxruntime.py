"""The onnxruntime backend through the real server and Triton's clients: every datatype in and
out (HTTP binary tensors, gRPC raw contents), reshape, scalars, optional inputs, external data,
default_model_filename; auto-complete as Triton's backend does it; instance groups running
concurrently; execution providers; model parameters; warmup; failures that stay with their model.

Every model is built here with the `onnx` package into a temporary repository."""

import os
import sys
import threading
import time

import ml_dtypes
import numpy as np
import onnx
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from onnx import TensorProto as T
from onnx import helper, numpy_helper
from tritonclient.utils import InferenceServerException

import harness
from tensors import infer_inputs, requested_outputs

pytestmark = pytest.mark.timeout(180)

# Triton datatype -> (ONNX element type, numpy type, type add/sub computes in).
DATATYPES = {
    "BOOL": (T.BOOL, np.bool_, T.INT64),
    "INT8": (T.INT8, np.int8, T.INT64),
    "INT16": (T.INT16, np.int16, T.INT64),
    "INT32": (T.INT32, np.int32, T.INT64),
    "INT64": (T.INT64, np.int64, T.INT64),
    "UINT8": (T.UINT8, np.uint8, T.INT64),
    "UINT16": (T.UINT16, np.uint16, T.INT64),
    "UINT32": (T.UINT32, np.uint32, T.INT64),
    "UINT64": (T.UINT64, np.uint64, T.INT64),
    "FP16": (T.FLOAT16, np.float16, T.FLOAT),
    "BF16": (T.BFLOAT16, ml_dtypes.bfloat16, T.FLOAT),
    "FP32": (T.FLOAT, np.float32, T.FLOAT),
    "FP64": (T.DOUBLE, np.float64, T.DOUBLE),
    "BYTES": (T.STRING, np.object_, T.INT64),
}
PROTOCOLS = {"http": httpclient, "grpc": grpcclient}


# -- models -------------------------------------------------------------------------------------
def onnx_model(nodes, inputs, outputs, initializers=(), opset=17):
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info(*i) for i in inputs],
        [helper.make_tensor_value_info(*o) for o in outputs], initializer=list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)
    onnx.checker.check_model(model)
    return model


def identity(elem, shape=("batch", "n")):
    return onnx_model([helper.make_node("Identity", ["INPUT0"], ["OUTPUT0"])],
                      [("INPUT0", elem, list(shape))], [("OUTPUT0", elem, list(shape))])


def add_sub(elem, compute, shape=("batch", 4)):
    """OUTPUT0 = INPUT0 + INPUT1, OUTPUT1 = INPUT0 - INPUT1, computed in `compute` and cast back."""
    shape = list(shape)
    return onnx_model(
        [helper.make_node("Cast", ["INPUT0"], ["a"], to=compute),
         helper.make_node("Cast", ["INPUT1"], ["b"], to=compute),
         helper.make_node("Add", ["a", "b"], ["sum"]),
         helper.make_node("Sub", ["a", "b"], ["difference"]),
         helper.make_node("Cast", ["sum"], ["OUTPUT0"], to=elem),
         helper.make_node("Cast", ["difference"], ["OUTPUT1"], to=elem)],
        [("INPUT0", elem, shape), ("INPUT1", elem, shape)],
        [("OUTPUT0", elem, shape), ("OUTPUT1", elem, shape)])


def add_sub_config(name, datatype):
    config_type = "TYPE_STRING" if datatype == "BYTES" else "TYPE_" + datatype
    tensors = lambda kind, names: " ".join(
        '%s { name: "%s" data_type: %s dims: [ 4 ] }' % (kind, n, config_type) for n in names)
    return 'name: "%s" backend: "onnxruntime" max_batch_size: 8 %s %s' % (
        name, tensors("input", ["INPUT0", "INPUT1"]), tensors("output", ["OUTPUT0", "OUTPUT1"]))


def write(repo, name, model, config=None, filename="model.onnx"):
    folder = os.path.join(str(repo), name)
    os.makedirs(os.path.join(folder, "1"), exist_ok=True)
    if config is not None:
        with open(os.path.join(folder, "config.pbtxt"), "w") as f:
            f.write(config)
    if model is not None:
        onnx.save(model, os.path.join(folder, "1", filename))
    return folder


# -- data ---------------------------------------------------------------------------------------
def operands(datatype, shape, seed):
    rng = np.random.default_rng(seed)
    numpy_type = DATATYPES[datatype][1]
    if datatype == "BOOL":
        return [rng.integers(0, 2, shape).astype(bool) for _ in range(2)]
    if datatype == "BYTES":
        return [np.array([str(v).encode() for v in rng.integers(-1000, 1000, int(np.prod(shape)))],
                         dtype=np.object_).reshape(shape) for _ in range(2)]
    if np.issubdtype(numpy_type, np.integer):
        info = np.iinfo(numpy_type)  # whole range for the small types: sums wrap as in numpy
        low, high = max(int(info.min), -2**40), min(int(info.max), 2**40)
        return [rng.integers(low, high, shape, endpoint=True).astype(numpy_type) for _ in range(2)]
    # Whole numbers are exact in every float type, BF16 included.
    return [rng.integers(-100, 100, shape).astype(np.float32).astype(numpy_type) for _ in range(2)]


def expected_add_sub(datatype, a, b):
    if datatype == "BOOL":
        return a | b, a ^ b  # non-zero sums and differences cast back to true
    if datatype == "BYTES":
        ints = lambda x: np.array([[int(v) for v in r] for r in x])
        encode = lambda x: np.array([[str(v).encode() for v in r] for r in x], dtype=np.object_)
        return encode(ints(a) + ints(b)), encode(ints(a) - ints(b))
    with np.errstate(over="ignore"):
        if datatype == "BF16":
            wide = a.astype(np.float32), b.astype(np.float32)
            return (wide[0] + wide[1]).astype(a.dtype), (wide[0] - wide[1]).astype(a.dtype)
        return a + b, a - b


def assert_same(got, want):
    assert got is not None
    assert got.shape == want.shape, (got.shape, want.shape)
    if want.dtype == ml_dtypes.bfloat16:
        got, want = got.astype(np.float32), want.astype(np.float32)
    np.testing.assert_array_equal(got, want)


def infer(srv, protocol, model, arrays, outputs):
    module = PROTOCOLS[protocol]
    client = srv.http_client() if protocol == "http" else srv.grpc_client()
    # HTTP: binary tensors both ways; gRPC: raw contents, as tritonclient always sends them.
    requested = requested_outputs(module, outputs, binary=True if protocol == "http" else None)
    result = client.infer(model, infer_inputs(module, arrays), outputs=requested)
    return {name: result.as_numpy(name) for name in outputs}


def index(srv):
    return {m["name"]: m for m in srv.http_client().get_model_repository_index()}


def reason(srv, model):
    entry = index(srv)[model]
    assert entry["state"] == "UNAVAILABLE", entry
    return entry["reason"]


# -- one server for the datatype and tensor-layout cases -------------------------------------------
@pytest.fixture(scope="module")
def tensors_server(tmp_path_factory):
    repo = tmp_path_factory.mktemp("ort_tensors")
    for datatype, (elem, _, compute) in DATATYPES.items():
        # Identity models have no config: auto-complete makes them batch (first dim -1).
        write(repo, "identity_" + datatype.lower(), identity(elem))
        write(repo, "addsub_" + datatype.lower(), add_sub(elem, compute), add_sub_config("addsub_" + datatype.lower(), datatype))
    # reshape on an input and an output: clients see [6], the model [2, 3].
    write(repo, "reshaped", identity(T.FLOAT, ("batch", 2, 3)), """
        name: "reshaped" backend: "onnxruntime" max_batch_size: 4
        input { name: "INPUT0" data_type: TYPE_FP32 dims: [ 6 ] reshape { shape: [ 2, 3 ] } }
        output { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 6 ] reshape { shape: [ 2, 3 ] } }""")
    # Scalars in and out, no batching: auto-complete writes dims [1].
    write(repo, "scalar", onnx_model([helper.make_node("Neg", ["X"], ["Y"])], [("X", T.INT64, [])], [("Y", T.INT64, [])]))
    # An optional input: BIAS is an initializer that is also a graph input (an overridable one).
    bias = numpy_helper.from_array(np.array([10, 20, 30], dtype=np.float32), "BIAS")
    write(repo, "optional", onnx_model(
        [helper.make_node("Add", ["X", "BIAS"], ["Y"])],
        [("X", T.FLOAT, [3]), ("BIAS", T.FLOAT, [3])], [("Y", T.FLOAT, [3])], [bias]), """
        name: "optional" backend: "onnxruntime"
        input { name: "X" data_type: TYPE_FP32 dims: [ 3 ] }
        input { name: "BIAS" data_type: TYPE_FP32 dims: [ 3 ] optional: true }
        output { name: "Y" data_type: TYPE_FP32 dims: [ 3 ] }""")
    # model.onnx as a folder: the graph with its weights in an external data file beside it.
    weights = np.arange(16, dtype=np.float32).reshape(4, 4)
    external = onnx_model([helper.make_node("MatMul", ["X", "W"], ["Y"])], [("X", T.FLOAT, ["batch", 4])],
                          [("Y", T.FLOAT, ["batch", 4])], [numpy_helper.from_array(weights, "W")])
    folder = os.path.join(write(repo, "external", None), "1", "model.onnx")
    os.makedirs(folder)
    onnx.save_model(external, os.path.join(folder, "model.onnx"), save_as_external_data=True,
                    all_tensors_to_one_file=True, location="weights.bin", size_threshold=0)
    # default_model_filename.
    write(repo, "renamed", identity(T.INT32), 'name: "renamed" backend: "onnxruntime" default_model_filename: "net.onnx"',
          filename="net.onnx")
    srv = harness.Server(repo)
    srv.start(timeout=60)
    yield srv
    srv.stop()


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("datatype", DATATYPES)
def test_identity_every_datatype(tensors_server, protocol, datatype):
    a, _ = operands(datatype, (2, 3), seed=1)
    if datatype == "BYTES":  # any bytes at all, not only text
        a = np.array([[b"", b"\x00nul", b"\xff\xfe"], [b"text", b"x" * 1000, b"\n"]], dtype=np.object_)
    got = infer(tensors_server, protocol, "identity_" + datatype.lower(), {"INPUT0": a}, ["OUTPUT0"])
    assert_same(got["OUTPUT0"], a)


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("datatype", DATATYPES)
def test_add_sub_every_datatype(tensors_server, protocol, datatype):
    a, b = operands(datatype, (2, 4), seed=2)
    got = infer(tensors_server, protocol, "addsub_" + datatype.lower(), {"INPUT0": a, "INPUT1": b},
                ["OUTPUT0", "OUTPUT1"])
    total, difference = expected_add_sub(datatype, a, b)
    assert_same(got["OUTPUT0"], total)
    assert_same(got["OUTPUT1"], difference)


def test_auto_completed_identity_config(tensors_server):
    config = tensors_server.http_client().get_model_config("identity_bf16")
    assert config["max_batch_size"] == 4
    assert config["dynamic_batching"] is not None
    assert [(i["name"], i["data_type"], i["dims"]) for i in config["input"]] == [("INPUT0", "TYPE_BF16", [-1])]
    assert config["output"][0]["data_type"] == "TYPE_BF16"
    assert tensors_server.http_client().get_model_config("identity_bytes")["input"][0]["data_type"] == "TYPE_STRING"


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_reshape_on_input_and_output(tensors_server, protocol):
    x = np.arange(12, dtype=np.float32).reshape(2, 6)
    assert_same(infer(tensors_server, protocol, "reshaped", {"INPUT0": x}, ["OUTPUT0"])["OUTPUT0"], x)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_scalar_model(tensors_server, protocol):
    config = tensors_server.http_client().get_model_config("scalar")
    assert (config["max_batch_size"], config["input"][0]["dims"]) == (0, [1])
    got = infer(tensors_server, protocol, "scalar", {"X": np.array([7], dtype=np.int64)}, ["Y"])
    assert_same(got["Y"], np.array([-7], dtype=np.int64))


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_optional_input(tensors_server, protocol):
    x = np.array([1, 2, 3], dtype=np.float32)
    # Left out, the model's own initializer is used.
    assert_same(infer(tensors_server, protocol, "optional", {"X": x}, ["Y"])["Y"], x + [10, 20, 30])
    bias = np.array([-1, -1, -1], dtype=np.float32)
    assert_same(infer(tensors_server, protocol, "optional", {"X": x, "BIAS": bias}, ["Y"])["Y"], x - 1)


def test_model_folder_with_external_data(tensors_server):
    x = np.eye(4, dtype=np.float32)[:2]
    got = infer(tensors_server, "http", "external", {"X": x}, ["Y"])["Y"]
    assert_same(got, x @ np.arange(16, dtype=np.float32).reshape(4, 4))


def test_default_model_filename(tensors_server):
    x = np.array([[5, 6]], dtype=np.int32)
    assert_same(infer(tensors_server, "grpc", "renamed", {"INPUT0": x}, ["OUTPUT0"])["OUTPUT0"], x)


# -- auto-complete ------------------------------------------------------------------------------
def batchable():
    return add_sub(T.FLOAT, T.FLOAT, ("batch", 4))


def fixed():
    return add_sub(T.INT32, T.INT64, (2, 4))


def test_auto_complete_cases(start_server, tmp_path):
    repo = tmp_path / "models"
    write(repo, "no_config", batchable())
    write(repo, "partial", batchable(), 'input { name: "INPUT0" data_type: TYPE_FP32 dims: [ 4 ] }\n'
          'input { name: "INPUT1" data_type: TYPE_FP32 dims: [ 4 ] } max_batch_size: 2')
    write(repo, "sequence", batchable(), 'max_batch_size: 8 sequence_batching { }')
    write(repo, "unbatchable", fixed())
    write(repo, "unbatchable_mbs", fixed(), "max_batch_size: 8")
    write(repo, "wrong_name", batchable(), 'max_batch_size: 4 input { name: "IN" data_type: TYPE_FP32 dims: [ 4 ] }'
          ' input { name: "INPUT1" data_type: TYPE_FP32 dims: [ 4 ] }')
    write(repo, "too_few", batchable(), 'max_batch_size: 4 input { name: "INPUT1" data_type: TYPE_FP32 dims: [ 4 ] }')
    write(repo, "wrong_type", batchable(), 'max_batch_size: 4 input { name: "INPUT0" data_type: TYPE_INT32 dims: [ 4 ] }'
          ' input { name: "INPUT1" data_type: TYPE_FP32 dims: [ 4 ] }')
    write(repo, "wrong_rank", batchable(), 'max_batch_size: 4 output { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 2, 2 ] }')
    srv = start_server(repo, "--exit-on-error=false", wait_for="live", timeout=60)
    client = srv.http_client()
    harness.wait_until(lambda: client.is_model_ready("no_config"), message="no_config to load")

    config = client.get_model_config("no_config")
    assert config["max_batch_size"] == 4 and config["dynamic_batching"] is not None
    assert [(i["name"], i["data_type"], i["dims"]) for i in config["input"]] == [
        ("INPUT0", "TYPE_FP32", [4]), ("INPUT1", "TYPE_FP32", [4])]
    assert [o["name"] for o in config["output"]] == ["OUTPUT0", "OUTPUT1"]

    # Partial: the given inputs and max_batch_size stay, the outputs come from the model.
    config = client.get_model_config("partial")
    assert config["max_batch_size"] == 2 and [o["name"] for o in config["output"]] == ["OUTPUT0", "OUTPUT1"]
    # A configured scheduler is kept: no dynamic batcher next to a sequence batcher.
    config = client.get_model_config("sequence")
    assert config.get("sequence_batching") is not None and config.get("dynamic_batching") is None

    config = client.get_model_config("unbatchable")
    assert config["max_batch_size"] == 0 and config.get("dynamic_batching") is None
    assert config["input"][0]["dims"] == [2, 4]

    assert reason(srv, "unbatchable_mbs").endswith(
        "autofill failed for model 'unbatchable_mbs': model does not support batching while non-zero "
        "max_batch_size is specified")
    assert "unexpected inference input 'IN', allowed inputs are: INPUT0, INPUT1" in reason(srv, "wrong_name")
    assert "unable to load model 'too_few', configuration expects 1 inputs, model provides 2" in reason(srv, "too_few")
    assert ("unable to load model 'wrong_type', configuration expects datatype TYPE_INT32 for input 'INPUT0', "
            "model provides TYPE_FP32") in reason(srv, "wrong_type")
    assert ("model 'wrong_rank', tensor 'OUTPUT0': the model expects 2 dimensions (shape [-1,4]) but the model "
            "configuration specifies 3 dimensions") in reason(srv, "wrong_rank")


def test_default_max_batch_size_from_backend_config(start_server, tmp_path):
    repo = tmp_path / "models"
    write(repo, "no_config", batchable())
    srv = start_server(repo, "--backend-config=onnxruntime,default-max-batch-size=16")
    assert srv.http_client().get_model_config("no_config")["max_batch_size"] == 16


def test_disable_auto_complete_config(start_server, tmp_path):
    repo = tmp_path / "models"
    write(repo, "no_config", batchable())
    write(repo, "partial", batchable(), 'backend: "onnxruntime" max_batch_size: 4')
    srv = start_server(repo, "--disable-auto-complete-config", "--exit-on-error=false", wait_for="live")
    harness.wait_until(lambda: len(index(srv)) == 2, message="both models in the index")
    assert "config.pbtxt' does not exist" in reason(srv, "no_config")
    assert "configuration expects 0 inputs, model provides 2" in reason(srv, "partial")


# -- instances --------------------------------------------------------------------------------
def slow_model():
    """About 7 GFLOP: Y = sum(tanh(... tanh(expand(X) @ W) ... @ W)), from one number X."""
    size, layers = 768, 8
    nodes = [helper.make_node("Expand", ["X", "shape"], ["h0"])]
    for i in range(layers):
        nodes += [helper.make_node("MatMul", ["h%d" % i, "W"], ["m%d" % i]),
                  helper.make_node("Tanh", ["m%d" % i], ["h%d" % (i + 1)])]
    nodes.append(helper.make_node("ReduceSum", ["h%d" % layers], ["Y"], keepdims=0))
    initializers = [numpy_helper.from_array(np.array([size, size], dtype=np.int64), "shape"),
                    numpy_helper.from_array(np.full((size, size), 0.01, dtype=np.float32), "W")]
    return onnx_model(nodes, [("X", T.FLOAT, [1])], [("Y", T.FLOAT, [])], initializers)


SLOW_CONFIG = """
    name: "%s" backend: "onnxruntime"
    input { name: "X" data_type: TYPE_FP32 dims: [ 1 ] }
    output { name: "Y" data_type: TYPE_FP32 dims: [ 1 ] }
    instance_group { count: %d kind: KIND_CPU }
    parameters { key: "intra_op_thread_count" value: { string_value: "1" } }
    model_warmup { name: "zeros" batch_size: 1 inputs { key: "X" value: { data_type: TYPE_FP32 dims: [ 1 ] zero_data: true } } }"""


def compute_ns(srv, model):
    stats = srv.http_client().get_inference_statistics(model)["model_stats"][0]
    return stats["execution_count"], stats["inference_stats"]["compute_infer"]["ns"]


def run_two_at_once(srv, model):
    """Sends two requests together; returns (seconds both took, executions, compute ns they added)."""
    errors = []

    def one():
        try:
            client = httpclient.InferenceServerClient(srv.http_url, network_timeout=120)
            result = client.infer(model, infer_inputs(httpclient, {"X": np.ones(1, dtype=np.float32)}))
            assert result.as_numpy("Y").shape == (1,)
            client.close()
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    before = compute_ns(srv, model)
    threads = [threading.Thread(target=one) for _ in range(2)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    assert not errors, errors
    after = compute_ns(srv, model)
    return wall, after[0] - before[0], (after[1] - before[1]) / 1e9


def test_two_instances_execute_concurrently(start_server, tmp_path):
    repo = tmp_path / "models"
    write(repo, "two", slow_model(), SLOW_CONFIG % ("two", 2))
    write(repo, "one", slow_model(), SLOW_CONFIG % ("one", 1))
    srv = start_server(repo, timeout=90)
    # Warmup ran on every instance before the models were ready, and is not in the statistics.
    assert compute_ns(srv, "two") == (0, 0)
    # Two instances: both executions are in compute at the same time, so the compute times the
    # statistics add up exceed the time the two requests took. One instance runs them one after
    # the other, so its compute times fit within that time.
    wall, executions, compute = run_two_at_once(srv, "two")
    assert executions == 2
    assert compute > 1.3 * wall, (compute, wall)
    wall, executions, compute = run_two_at_once(srv, "one")
    assert executions == 2
    assert compute <= wall, (compute, wall)


def test_kind_gpu_without_gpus_fails_to_load(start_server, tmp_path):
    if sys.platform == "darwin":
        pytest.skip("macOS counts its GPU: KIND_GPU selects CoreML there")
    repo = tmp_path / "models"
    write(repo, "gpu", batchable(), 'instance_group { kind: KIND_GPU }')
    write(repo, "cpu", batchable())
    srv = start_server(repo, "--exit-on-error=false", wait_for="live", env={"CUDA_VISIBLE_DEVICES": "-1"})
    harness.wait_until(lambda: srv.http_client().is_model_ready("cpu"), message="cpu to load")
    assert "has kind KIND_GPU but no GPUs are available" in reason(srv, "gpu")


def test_default_instance_count_and_kind(start_server, tmp_path):
    repo = tmp_path / "models"
    write(repo, "plain", batchable())
    srv = start_server(repo, env={"CUDA_VISIBLE_DEVICES": "-1"})
    group = srv.http_client().get_model_config("plain")["instance_group"]
    # Triton's default for this backend on the CPU: two instances.
    assert [(g["kind"], g["count"]) for g in group] == [("KIND_CPU", 2)]


# -- execution providers, parameters, warmup --------------------------------------------------------
COREML = 'optimization { execution_accelerators { gpu_execution_accelerator: [ { name: "coreml" } ] } }'


def test_missing_execution_provider(start_server, tmp_path):
    repo = tmp_path / "models"
    write(repo, "coreml", batchable(), COREML)
    write(repo, "coreml_fallback", batchable(),
          COREML + ' parameters { key: "cpu_fallback" value: { string_value: "true" } }')
    srv = start_server(repo, "--exit-on-error=false", wait_for="live", timeout=60)
    client = srv.http_client()
    harness.wait_until(lambda: client.is_model_ready("coreml_fallback"), message="coreml_fallback to load")
    if sys.platform == "darwin":  # the macOS wheel has CoreML
        assert client.is_model_ready("coreml")
    else:
        text = reason(srv, "coreml")
        assert "CoreMLExecutionProvider is not available in the loaded ONNX Runtime, which has " in text
        assert "CPUExecutionProvider" in text and "'cpu_fallback'" in text
    a, b = operands("FP32", (1, 4), seed=3)
    got = infer(srv, "http", "coreml_fallback", {"INPUT0": a, "INPUT1": b}, ["OUTPUT0"])
    assert_same(got["OUTPUT0"], a + b)


def test_model_parameters(start_server, tmp_path):
    parameters = {
        "intra_op_thread_count": "1", "inter_op_thread_count": "1", "execution_mode": "1",
        "enable_mem_arena": "true", "enable_mem_pattern": "off",
        "memory.enable_memory_arena_shrinkage": "cpu:0",
    }
    text = " ".join('parameters { key: "%s" value: { string_value: "%s" } }' % kv for kv in parameters.items())
    repo = tmp_path / "models"
    for level in (-1, 1, 2):
        write(repo, "tuned%d" % (level + 1), batchable(), "%s optimization { graph { level: %d } }" % (text, level))
    write(repo, "no_arena", batchable(), 'parameters { key: "enable_mem_arena" value: { string_value: "0" } }')
    write(repo, "bad_mode", batchable(), 'parameters { key: "execution_mode" value: { string_value: "2" } }')
    write(repo, "bad_arena", batchable(), 'parameters { key: "enable_mem_arena" value: { string_value: "maybe" } }')
    srv = start_server(repo, "--exit-on-error=false", wait_for="live", timeout=60)
    client = srv.http_client()
    for model in ("tuned0", "tuned2", "tuned3", "no_arena"):
        harness.wait_until(lambda: client.is_model_ready(model), message=model + " to load")
        a, b = operands("FP32", (3, 4), seed=4)
        assert_same(infer(srv, "grpc", model, {"INPUT0": a, "INPUT1": b}, ["OUTPUT1"])["OUTPUT1"], a - b)
    assert reason(srv, "bad_mode").endswith(
        "Invalid configuration value provided. Expected values for  execution_mode are 0 or 1 but got 2 .")
    assert reason(srv, "bad_arena").endswith("failed to convert 'maybe' to boolean")


def warmup_config(name, inputs):
    entries = " ".join('inputs { key: "%s" value: { data_type: %s dims: [ 4 ] %s } }' % i for i in inputs)
    return 'name: "%s" model_warmup { name: "sample" batch_size: 2 count: 3 %s }' % (name, entries)


def test_model_warmup(start_server, tmp_path):
    repo = tmp_path / "models"
    write(repo, "zeros", batchable(), warmup_config(
        "zeros", [("INPUT0", "TYPE_FP32", "zero_data: true"), ("INPUT1", "TYPE_FP32", "random_data: true")]))
    strings = add_sub(T.STRING, T.INT64)
    for name, data in (("from_file", b"".join(len(s).to_bytes(4, "little") + s for s in [b"1", b"2", b"3", b"4"])),
                       ("not_numbers", b"".join(len(s).to_bytes(4, "little") + s for s in [b"x"] * 4))):
        folder = write(repo, name, strings, warmup_config(
            name, [(i, "TYPE_STRING", 'input_data_file: "strings"') for i in ("INPUT0", "INPUT1")]))
        os.makedirs(os.path.join(folder, "warmup"))
        with open(os.path.join(folder, "warmup", "strings"), "wb") as f:
            f.write(data)
    write(repo, "short_file", batchable(), warmup_config("short_file", [
        ("INPUT0", "TYPE_FP32", 'input_data_file: "missing"'), ("INPUT1", "TYPE_FP32", "zero_data: true")]))
    srv = start_server(repo, "--exit-on-error=false", wait_for="live", timeout=60)
    client = srv.http_client()
    for model in ("zeros", "from_file"):
        harness.wait_until(lambda: client.is_model_ready(model), message=model + " to load")
        stats = client.get_inference_statistics(model)["model_stats"][0]
        assert stats["execution_count"] == 0, "warmup is not counted"
    # The warmup sample really ran: "x" is no number, so the model fails in ONNX Runtime.
    text = reason(srv, "not_numbers")
    assert "failed to run warmup sample 'sample': " in text and "onnx runtime error" in text
    assert "failed to read warmup file" in reason(srv, "short_file")


# -- failures stay with their model ------------------------------------------------------------------
def test_corrupt_model_fails_alone(start_server, tmp_path):
    repo = tmp_path / "models"
    write(repo, "good", batchable())
    folder = write(repo, "corrupt", None, 'backend: "onnxruntime" max_batch_size: 1')
    with open(os.path.join(folder, "1", "model.onnx"), "wb") as f:
        f.write(b"\x08\x07 not a protobuf")
    write(repo, "missing_file", None, 'backend: "onnxruntime" default_model_filename: "absent.onnx"')
    srv = start_server(repo, "--exit-on-error=false", wait_for="live", timeout=60)
    client = srv.http_client()
    harness.wait_until(lambda: client.is_model_ready("good"), message="good to load")
    assert "unable to load model 'corrupt'" in reason(srv, "corrupt")
    assert "unable to find '" in reason(srv, "missing_file") and "absent.onnx' for model instance" in reason(srv, "missing_file")
    a, b = operands("FP32", (1, 4), seed=5)
    assert_same(infer(srv, "http", "good", {"INPUT0": a, "INPUT1": b}, ["OUTPUT0"])["OUTPUT0"], a + b)


def test_missing_library_fails_models_not_the_server(start_server, tmp_path):
    repo = tmp_path / "models"
    write(repo, "good", batchable())
    srv = start_server(repo, "--exit-on-error=false", wait_for="live",
                       env={"ORT_DYLIB_PATH": str(tmp_path / "libonnxruntime.so.1.0.0")})
    harness.wait_until(lambda: "good" in index(srv) and index(srv)["good"].get("reason"), message="the failure")
    assert "unable to load ONNX Runtime" in reason(srv, "good")
    assert srv.http_client().is_server_live()
