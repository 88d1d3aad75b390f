"""The Python backend (`backend: "python"`, model.py with class TritonPythonModel), driven with
Triton's clients: the model API and pb_utils, decoupled models over gRPC streams, BLS, auto-complete,
custom metrics, logging, instances, execution environments and shared memory tensors.

The models here are our own, written after the ideas of Triton's python_backend examples (add_sub,
decoupled repeat and square, bls, bls_decoupled, auto_complete, custom_metrics, preprocessing).
"""

import json
import os
import queue
import subprocess
import sys
import tarfile
import textwrap
import threading
import time

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

import harness

VENV_BIN = os.path.dirname(sys.executable)


def python_env(**extra):
    """The server's environment: `python3` on PATH is the test venv's (it has numpy)."""
    env = {"PATH": VENV_BIN + os.pathsep + os.environ.get("PATH", "")}
    env.update(extra)
    return env


def write_model(repository, name, config, code, version=1, files=None):
    """<repository>/<name>/config.pbtxt (None: no config) and <version>/model.py."""
    folder = os.path.join(str(repository), name)
    os.makedirs(os.path.join(folder, str(version)), exist_ok=True)
    if config is not None:
        with open(os.path.join(folder, "config.pbtxt"), "w") as f:
            f.write('name: "%s"\nbackend: "python"\n%s' % (name, textwrap.dedent(config)))
    with open(os.path.join(folder, str(version), "model.py"), "w") as f:
        f.write(textwrap.dedent(code))
    for rel, text in (files or {}).items():
        with open(os.path.join(folder, rel), "w") as f:
            f.write(textwrap.dedent(text))
    return folder


def io(direction, name, dtype, dims):
    return '%s [ { name: "%s" data_type: %s dims: [ %s ] } ]\n' % (
        direction, name, dtype, ", ".join(str(d) for d in dims))


ADD_SUB = """
    import json
    import triton_python_backend_utils as pb_utils

    class TritonPythonModel:
        def initialize(self, args):
            config = json.loads(args["model_config"])
            self.dtype = pb_utils.triton_string_to_numpy(pb_utils.get_output_config_by_name(config, "OUTPUT0")["data_type"])

        def execute(self, requests):
            responses = []
            for request in requests:
                a = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
                b = pb_utils.get_input_tensor_by_name(request, "INPUT1").as_numpy()
                responses.append(pb_utils.InferenceResponse([
                    pb_utils.Tensor("OUTPUT0", (a + b).astype(self.dtype)),
                    pb_utils.Tensor("OUTPUT1", (a - b).astype(self.dtype))]))
            return responses
"""
ADD_SUB_CONFIG = (
    'input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ 4 ] }, { name: "INPUT1" data_type: TYPE_FP32 dims: [ 4 ] } ]\n'
    'output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 4 ] }, { name: "OUTPUT1" data_type: TYPE_FP32 dims: [ 4 ] } ]\n'
)

# Echoes what the model sees: initialize's args, the request's id, correlation id, flags and
# parameters, the model module's name, and whether the input is a view of shared memory.
INSPECT = """
    import json, mmap, os
    import numpy as np
    import triton_python_backend_utils as pb_utils
    import helper

    class TritonPythonModel:
        def initialize(self, args):
            self.args = args

        def execute(self, requests):
            responses = []
            for request in requests:
                data = pb_utils.get_input_tensor_by_name(request, "IN").as_numpy()
                owner = data
                while isinstance(owner.base, np.ndarray):
                    owner = owner.base
                info = {
                    "args": self.args, "id": request.request_id(), "correlation_id": request.correlation_id(),
                    "flags": request.flags(), "parameters": json.loads(request.parameters()),
                    "module": __name__, "helper": helper.VALUE, "model_dir": pb_utils.get_model_dir(),
                    "shared_memory": isinstance(owner.base, memoryview) and isinstance(owner.base.obj, mmap.mmap),
                    "pid": os.getpid(), "requested": request.requested_output_names(),
                }
                responses.append(pb_utils.InferenceResponse([
                    pb_utils.Tensor("INFO", np.array([json.dumps(info).encode()], dtype=np.object_)),
                    pb_utils.Tensor("OUT", data)]))
            return responses
"""
INSPECT_CONFIG = io("input", "IN", "TYPE_FP32", [-1]) + (
    'output [ { name: "INFO" data_type: TYPE_STRING dims: [ 1 ] }, { name: "OUT" data_type: TYPE_FP32 dims: [ -1 ] } ]\n')

STRINGS = """
    import numpy as np
    import triton_python_backend_utils as pb_utils

    class TritonPythonModel:
        def execute(self, requests):
            responses = []
            for request in requests:
                items = pb_utils.get_input_tensor_by_name(request, "IN").as_numpy()
                assert items.dtype == np.object_ and all(isinstance(i, bytes) for i in items.flat)
                upper = np.array([i.upper() for i in items.flat], dtype=np.object_).reshape(items.shape)
                responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("OUT", upper)]))
            return responses
"""

FAILING = """
    import triton_python_backend_utils as pb_utils

    class TritonPythonModel:
        def execute(self, requests):
            responses = []
            for request in requests:
                value = pb_utils.get_input_tensor_by_name(request, "IN").as_numpy()[0]
                if value == 1:
                    responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError("one is not welcome", pb_utils.TritonError.INVALID_ARG)))
                elif value == 2:
                    raise ValueError("two breaks the model")
                else:
                    responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("OUT", pb_utils.get_input_tensor_by_name(request, "IN").as_numpy())]))
            return responses
"""

# Triton's decoupled repeat example's idea: one response per element of IN, from a thread that
# goes on after execute returns, then the final flag alone. A negative element is an error.
REPEAT = """
    import threading, time
    import numpy as np
    import triton_python_backend_utils as pb_utils

    class TritonPythonModel:
        def initialize(self, args):
            self.threads = []

        def execute(self, requests):
            for request in requests:
                values = pb_utils.get_input_tensor_by_name(request, "IN").as_numpy()
                thread = threading.Thread(target=self.respond, args=(request.get_response_sender(), values))
                thread.start()
                self.threads.append(thread)
            return None

        def respond(self, sender, values):
            for index, value in enumerate(values):
                time.sleep(0.005)
                if value < 0:
                    sender.send(pb_utils.InferenceResponse(error=pb_utils.TritonError("negative value %d" % value)))
                    continue
                sender.send(pb_utils.InferenceResponse([
                    pb_utils.Tensor("OUT", np.array([value], np.int32)),
                    pb_utils.Tensor("IDX", np.array([index], np.uint32))]))
            sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)

        def finalize(self):
            for thread in self.threads:
                thread.join()
"""
REPEAT_CONFIG = "model_transaction_policy { decoupled: True }\n" + io("input", "IN", "TYPE_INT32", [-1]) + (
    'output [ { name: "OUT" data_type: TYPE_INT32 dims: [ 1 ] }, { name: "IDX" data_type: TYPE_UINT32 dims: [ 1 ] } ]\n')

# Triton's square example: IN = n gives n responses holding n, sent from execute itself, with
# the last response carrying the final flag.
SQUARE = """
    import numpy as np
    import triton_python_backend_utils as pb_utils

    class TritonPythonModel:
        async def execute(self, requests):
            for request in requests:
                n = int(pb_utils.get_input_tensor_by_name(request, "IN").as_numpy()[0])
                sender = request.get_response_sender()
                for i in range(n):
                    flags = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL if i == n - 1 else 0
                    sender.send(pb_utils.InferenceResponse([pb_utils.Tensor("OUT", np.array([n], np.int32))]), flags=flags)
                if n == 0:
                    sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
"""
SQUARE_CONFIG = "model_transaction_policy { decoupled: true }\n" + io("input", "IN", "TYPE_INT32", [1]) + io(
    "output", "OUT", "TYPE_INT32", [1])

# BLS: add_sub through another model, sync or async; and the decoupled repeat model iterated.
BLS = """
    import asyncio
    import numpy as np
    import triton_python_backend_utils as pb_utils

    class TritonPythonModel:
        async def execute(self, requests):
            responses = []
            for request in requests:
                mode = pb_utils.get_input_tensor_by_name(request, "MODE").as_numpy()[0].decode()
                a = pb_utils.get_input_tensor_by_name(request, "INPUT0")
                b = pb_utils.get_input_tensor_by_name(request, "INPUT1")
                call = pb_utils.InferenceRequest(model_name="add_sub", requested_output_names=["OUTPUT0", "OUTPUT1"],
                                                 inputs=[pb_utils.Tensor("INPUT0", a.as_numpy()), pb_utils.Tensor("INPUT1", b.as_numpy())])
                if mode == "sync":
                    response = call.exec()
                elif mode == "async":
                    response, again = await asyncio.gather(call.async_exec(), call.async_exec())
                    assert np.array_equal(pb_utils.get_output_tensor_by_name(again, "OUTPUT0").as_numpy(),
                                          pb_utils.get_output_tensor_by_name(response, "OUTPUT0").as_numpy())
                elif mode == "missing":
                    response = pb_utils.InferenceRequest(model_name="no_such_model", requested_output_names=["X"],
                                                         inputs=[a]).exec()
                else:
                    response = pb_utils.InferenceRequest(model_name="repeat", requested_output_names=["OUT"],
                                                         inputs=[pb_utils.Tensor("IN", np.array([4, 5, 6], np.int32))]).exec()
                if response.has_error():
                    responses.append(pb_utils.InferenceResponse(error=response.error()))
                    continue
                responses.append(pb_utils.InferenceResponse(response.output_tensors()))
            return responses
"""
BLS_CONFIG = (
    'input [ { name: "MODE" data_type: TYPE_STRING dims: [ 1 ] }, { name: "INPUT0" data_type: TYPE_FP32 dims: [ 4 ] },'
    ' { name: "INPUT1" data_type: TYPE_FP32 dims: [ 4 ] } ]\n'
    'output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 4 ] }, { name: "OUTPUT1" data_type: TYPE_FP32 dims: [ 4 ] } ]\n')

BLS_DECOUPLED = """
    import numpy as np
    import triton_python_backend_utils as pb_utils

    class TritonPythonModel:
        def execute(self, requests):
            responses = []
            for request in requests:
                values = pb_utils.get_input_tensor_by_name(request, "IN")
                call = pb_utils.InferenceRequest(model_name="repeat", requested_output_names=["OUT"], inputs=[values])
                seen = []
                for response in call.exec(decoupled=True):
                    if response.has_error():
                        raise pb_utils.TritonModelException(response.error().message())
                    if response.output_tensors():
                        seen.append(int(pb_utils.get_output_tensor_by_name(response, "OUT").as_numpy()[0]))
                single = pb_utils.InferenceRequest(model_name="add_sub", requested_output_names=["OUTPUT0"], inputs=[
                    pb_utils.Tensor("INPUT0", np.ones(4, np.float32)), pb_utils.Tensor("INPUT1", np.ones(4, np.float32))])
                assert len(list(single.exec(decoupled=True))) == 1
                responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("SUM", np.array([sum(seen)], np.int32)),
                                                             pb_utils.Tensor("COUNT", np.array([len(seen)], np.int32))]))
            return responses
"""
BLS_DECOUPLED_CONFIG = io("input", "IN", "TYPE_INT32", [-1]) + (
    'output [ { name: "SUM" data_type: TYPE_INT32 dims: [ 1 ] }, { name: "COUNT" data_type: TYPE_INT32 dims: [ 1 ] } ]\n')

# Triton's auto_complete example's idea: no config file at all.
AUTO_COMPLETE = """
    import numpy as np
    import triton_python_backend_utils as pb_utils

    class TritonPythonModel:
        @staticmethod
        def auto_complete_config(config):
            config.add_input({"name": "IN", "data_type": "TYPE_INT64", "dims": [2]})
            config.add_output({"name": "OUT", "data_type": "TYPE_INT64", "dims": [2]})
            config.set_max_batch_size(8)
            config.set_dynamic_batching()
            try:
                config.add_input({"name": "IN", "data_type": "TYPE_FP32", "dims": [2]})
            except ValueError as e:
                assert "expects datatype TYPE_INT64" in str(e), e
            return config

        def execute(self, requests):
            return [pb_utils.InferenceResponse([pb_utils.Tensor("OUT", pb_utils.get_input_tensor_by_name(r, "IN").as_numpy() * 2)])
                    for r in requests]
"""

# Triton's custom_metrics example's idea, with every kind, and the logger at every level.
METRICS = """
    import numpy as np
    import triton_python_backend_utils as pb_utils

    class TritonPythonModel:
        def initialize(self, args):
            self.requests = pb_utils.MetricFamily("pytest_requests_total", "Requests seen", pb_utils.MetricFamily.COUNTER)
            self.counter = self.requests.Metric(labels={"model": args["model_name"], "version": args["model_version"]})
            self.gauge = pb_utils.MetricFamily("pytest_last_sum", "Sum of the last input", pb_utils.MetricFamily.GAUGE).Metric(labels={"model": "metrics"})
            self.histogram = pb_utils.MetricFamily("pytest_input_sum", "Input sums", pb_utils.MetricFamily.HISTOGRAM).Metric(buckets=[1.0, 10.0])
            pb_utils.Logger.log_info("metrics model info")
            pb_utils.Logger.log_warn("metrics model warning")
            pb_utils.Logger.log_error("metrics model error")
            pb_utils.Logger.log_verbose("metrics model verbose")

        def execute(self, requests):
            responses = []
            for request in requests:
                data = pb_utils.get_input_tensor_by_name(request, "IN").as_numpy()
                self.counter.increment(1)
                self.gauge.set(float(data.sum()))
                self.histogram.observe(float(data.sum()))
                try:
                    self.counter.increment(-1)
                    raise AssertionError("a negative increment was accepted")
                except pb_utils.TritonModelException:
                    pass
                total = np.array([self.counter.value()], np.float32)
                responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("OUT", total)]))
            return responses
"""

# is_ready follows a file; finalize leaves a file behind.
LIFECYCLE = """
    import os
    import numpy as np
    import triton_python_backend_utils as pb_utils

    class TritonPythonModel:
        def initialize(self, args):
            self.folder = args["model_repository"]

        def is_ready(self):
            return not os.path.exists(os.path.join(self.folder, "not_ready"))

        def execute(self, requests):
            return [pb_utils.InferenceResponse([pb_utils.Tensor("OUT", np.array([os.getpid()], np.int64))]) for _ in requests]

        def finalize(self):
            with open(os.path.join(self.folder, "finalized.%d" % os.getpid()), "w") as f:
                f.write("done")
"""
LIFECYCLE_CONFIG = io("input", "IN", "TYPE_FP32", [1]) + io("output", "OUT", "TYPE_INT64", [1])


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    repository = tmp_path_factory.mktemp("python_models")
    write_model(repository, "add_sub", ADD_SUB_CONFIG, ADD_SUB)
    write_model(repository, "inspect", "max_batch_size: 4\n" + INSPECT_CONFIG, INSPECT,
                files={"1/helper.py": "VALUE = 'from the version folder'\n"})
    write_model(repository, "strings", io("input", "IN", "TYPE_STRING", [-1, -1]) + io("output", "OUT", "TYPE_STRING", [-1, -1]), STRINGS)
    write_model(repository, "failing", io("input", "IN", "TYPE_INT32", [1]) + io("output", "OUT", "TYPE_INT32", [1]), FAILING)
    write_model(repository, "repeat", REPEAT_CONFIG, REPEAT)
    write_model(repository, "square", SQUARE_CONFIG, SQUARE)
    write_model(repository, "bls", BLS_CONFIG, BLS)
    write_model(repository, "bls_decoupled", BLS_DECOUPLED_CONFIG, BLS_DECOUPLED)
    write_model(repository, "auto_complete", None, AUTO_COMPLETE)
    write_model(repository, "metrics", io("input", "IN", "TYPE_FP32", [-1]) + io("output", "OUT", "TYPE_FP32", [1]), METRICS)
    write_model(repository, "lifecycle", LIFECYCLE_CONFIG + "instance_group [ { count: 2 kind: KIND_CPU } ]\n", LIFECYCLE)
    return str(repository)


@pytest.fixture(scope="module")
def server(models):
    srv = harness.Server(models, ["--log-verbose=1"], env=python_env())
    srv.start(timeout=60)
    try:
        yield srv
    finally:
        if srv.proc.poll() is None:
            srv.stop(expect_code=0)
        else:
            srv.kill()


def http_inputs(*arrays):
    inputs = []
    for name, array in arrays:
        tensor = httpclient.InferInput(name, list(array.shape), np_dtype(array))
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    return inputs


def grpc_inputs(*arrays):
    inputs = []
    for name, array in arrays:
        tensor = grpcclient.InferInput(name, list(array.shape), np_dtype(array))
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    return inputs


def np_dtype(array):
    from tritonclient.utils import np_to_triton_dtype
    return np_to_triton_dtype(array.dtype)


def test_add_sub_over_http_and_grpc(server):
    a = np.array([1, 2, 3, 4], np.float32)
    b = np.array([0.5, 0.5, 0.5, 0.5], np.float32)
    result = server.http_client().infer("add_sub", http_inputs(("INPUT0", a), ("INPUT1", b)))
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a + b)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), a - b)
    grpc = server.grpc_client()
    only = [grpcclient.InferRequestedOutput("OUTPUT1")]
    result = grpc.infer("add_sub", grpc_inputs(("INPUT0", a), ("INPUT1", b)), outputs=only)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), a - b)
    assert result.as_numpy("OUTPUT0") is None
    assert grpc.is_model_ready("add_sub")
    metadata = server.http_client().get_model_metadata("add_sub")
    assert metadata["platform"] == "" and [i["name"] for i in metadata["inputs"]] == ["INPUT0", "INPUT1"]


def test_what_the_model_sees(server, models):
    data = np.arange(6, dtype=np.float32).reshape(2, 3)
    client = server.http_client()
    result = client.infer("inspect", http_inputs(("IN", data)), request_id="req-7", sequence_id=0,
                          parameters={"temperature": 0.5, "label": "x", "n": 3, "flag": True},
                          outputs=[httpclient.InferRequestedOutput("INFO"), httpclient.InferRequestedOutput("OUT")])
    info = json.loads(result.as_numpy("INFO")[0])
    np.testing.assert_array_equal(result.as_numpy("OUT"), data)
    args = info["args"]
    assert sorted(args) == ["model_config", "model_instance_device_id", "model_instance_kind", "model_instance_name",
                            "model_name", "model_repository", "model_version"]
    assert all(isinstance(v, str) for v in args.values())
    assert (args["model_name"], args["model_version"], args["model_instance_kind"]) == ("inspect", "1", "CPU")
    assert (args["model_instance_name"], args["model_instance_device_id"]) == ("inspect_0", "0")
    assert args["model_repository"] == os.path.join(models, "inspect")
    config = json.loads(args["model_config"])
    assert config["name"] == "inspect" and config["max_batch_size"] == 4 and config["backend"] == "python"
    assert info["id"] == "req-7"
    assert info["parameters"] == {"temperature": 0.5, "label": "x", "n": 3, "flag": True}
    assert info["module"] == "1.model" and info["helper"] == "from the version folder"
    assert info["model_dir"] == os.path.join(models, "inspect", "1")
    assert info["requested"] == ["INFO", "OUT"]
    assert info["shared_memory"] is True, "inputs are numpy views of shared memory"
    # No requested outputs means all of them; a sequence's flags and correlation id come along.
    grpc = server.grpc_client()
    result = grpc.infer("inspect", grpc_inputs(("IN", data)), sequence_id=42, sequence_start=True)
    info = json.loads(result.as_numpy("INFO")[0])
    assert info["requested"] == ["INFO", "OUT"]
    assert (info["correlation_id"], info["flags"]) == (42, 1)
    result = grpc.infer("inspect", grpc_inputs(("IN", data)), sequence_id="abc", sequence_end=True)
    info = json.loads(result.as_numpy("INFO")[0])
    assert (info["correlation_id"], info["flags"]) == ("abc", 2)


def test_bytes_tensors(server):
    words = np.array([[b"hello", b"world"], [b"", b"\x00\xffbin"]], dtype=np.object_)
    for client, make in ((server.http_client(), http_inputs), (server.grpc_client(), grpc_inputs)):
        result = client.infer("strings", make(("IN", words)))
        np.testing.assert_array_equal(result.as_numpy("OUT"), np.vectorize(lambda w: w.upper(), otypes=[object])(words))


def test_errors_stay_with_their_requests(server):
    client = server.http_client()
    ok = client.infer("failing", http_inputs(("IN", np.array([5], np.int32))))
    assert ok.as_numpy("OUT")[0] == 5
    with pytest.raises(InferenceServerException) as error:
        client.infer("failing", http_inputs(("IN", np.array([1], np.int32))))
    assert error.value.status() == "400" and "one is not welcome" in error.value.message()
    with pytest.raises(InferenceServerException) as error:
        client.infer("failing", http_inputs(("IN", np.array([2], np.int32))))
    message = error.value.message()
    assert "Failed to process the request(s) for model 'failing', message: ValueError: two breaks the model" in message
    assert "model.py" in message, "the traceback names the model's file"
    assert client.infer("failing", http_inputs(("IN", np.array([3], np.int32)))).as_numpy("OUT")[0] == 3


def stream_responses(server, model, requests, timeout=20):
    """Sends `requests` (lists of (name, array)) on one gRPC stream, asking for empty final
    responses; returns {request id: [(result, error), ...]} once each has had its final one."""
    results = queue.Queue()
    client = server.grpc_client()
    client.start_stream(callback=lambda result, error: results.put((result, error)))
    try:
        for index, arrays in enumerate(requests):
            client.async_stream_infer(model, grpc_inputs(*arrays), request_id=str(index), enable_empty_final_response=True)
        by_id, done = {}, set()
        while len(done) < len(requests):
            result, error = results.get(timeout=timeout)
            if error is not None:
                # tritonclient hands stream errors over without their response (nor its id).
                by_id.setdefault(None, []).append(error)
                continue
            response = result.get_response()
            by_id.setdefault(response.id, []).append(result)
            if response.parameters["triton_final_response"].bool_param:
                done.add(response.id)
        return by_id
    finally:
        client.stop_stream()


def test_decoupled_repeat_over_a_stream(server):
    by_id = stream_responses(server, "repeat", [[("IN", np.array([7, 8, 9], np.int32))],
                                                [("IN", np.array([], np.int32))],
                                                [("IN", np.array([1, -2, 3], np.int32))]])
    first = by_id["0"]
    assert [r.as_numpy("OUT")[0] for r in first[:3]] == [7, 8, 9]
    assert [r.as_numpy("IDX")[0] for r in first[:3]] == [0, 1, 2]
    finals = [r.get_response().parameters["triton_final_response"].bool_param for r in first]
    assert finals == [False, False, False, True], "three responses, then the final flag alone"
    assert first[3].as_numpy("OUT") is None
    assert len(by_id["1"]) == 1 and by_id["1"][0].as_numpy("OUT") is None
    assert [r.as_numpy("OUT")[0] for r in by_id["2"] if r.as_numpy("OUT") is not None] == [1, 3]
    errors = by_id[None]
    assert len(errors) == 1 and "negative value -2" in errors[0].message()


def test_decoupled_square_like_tritons_client(server):
    """Triton's square client: no empty final responses; counts only."""
    responses = queue.Queue()
    client = server.grpc_client()
    client.start_stream(callback=lambda result, error: responses.put(error or result))
    values = [4, 2, 0, 1]
    for i, n in enumerate(values):
        client.async_stream_infer("square", grpc_inputs(("IN", np.array([n], np.int32))), request_id=str(i))
    got = {}
    for _ in range(sum(values)):
        item = responses.get(timeout=20)
        assert not isinstance(item, InferenceServerException), item
        got.setdefault(item.get_response().id, []).append(item.as_numpy("OUT")[0])
    client.stop_stream()
    assert got == {"0": [4] * 4, "1": [2] * 2, "3": [1]}
    assert responses.empty()


def test_decoupled_models_refuse_unary_requests(server):
    with pytest.raises(InferenceServerException) as error:
        server.grpc_client().infer("square", grpc_inputs(("IN", np.array([1], np.int32))))
    assert error.value.status() == "StatusCode.UNIMPLEMENTED"
    assert error.value.message() == "ModelInfer RPC doesn't support models with decoupled transaction policy"
    with pytest.raises(InferenceServerException) as error:
        server.http_client().infer("square", http_inputs(("IN", np.array([1], np.int32))))
    assert error.value.message() == "HTTP end point doesn't support models with decoupled transaction policy"


def test_bls_sync_async_and_errors(server):
    a = np.array([1, 2, 3, 4], np.float32)
    b = np.array([4, 3, 2, 1], np.float32)
    client = server.http_client()
    for mode in ("sync", "async"):
        result = client.infer("bls", http_inputs(("MODE", np.array([mode.encode()], np.object_)), ("INPUT0", a), ("INPUT1", b)))
        np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a + b)
        np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), a - b)
    with pytest.raises(InferenceServerException) as error:
        client.infer("bls", http_inputs(("MODE", np.array([b"missing"], np.object_)), ("INPUT0", a), ("INPUT1", b)))
    assert "no_such_model" in error.value.message()
    with pytest.raises(InferenceServerException) as error:
        client.infer("bls", http_inputs(("MODE", np.array([b"decoupled"], np.object_)), ("INPUT0", a), ("INPUT1", b)))
    assert "is using the decoupled" in error.value.message()


def test_bls_with_a_decoupled_model(server):
    result = server.grpc_client().infer("bls_decoupled", grpc_inputs(("IN", np.array([10, 20, 30, 40], np.int32))))
    assert result.as_numpy("SUM")[0] == 100 and result.as_numpy("COUNT")[0] == 4


def test_auto_complete(server):
    config = server.http_client().get_model_config("auto_complete")
    assert config["max_batch_size"] == 8
    assert [(i["name"], i["data_type"], i["dims"]) for i in config["input"]] == [("IN", "TYPE_INT64", [2])]
    assert [(o["name"], o["data_type"], o["dims"]) for o in config["output"]] == [("OUT", "TYPE_INT64", [2])]
    assert "dynamic_batching" in config and config["backend"] == "python"
    data = np.array([[1, 2], [3, 4]], np.int64)
    result = server.http_client().infer("auto_complete", http_inputs(("IN", data)))
    np.testing.assert_array_equal(result.as_numpy("OUT"), data * 2)


def test_custom_metrics_and_logging(server):
    client = server.http_client()
    for values in ([0.5], [2.0, 3.0], [100.0]):
        result = client.infer("metrics", http_inputs(("IN", np.array(values, np.float32))))
    assert result.as_numpy("OUT")[0] == 3
    _, _, body = harness.request(server.metrics_port, "GET", "/metrics")
    samples = harness.parse_metrics(body.decode())
    assert harness.metric(samples, "pytest_requests_total", model="metrics", version="1") == 3
    assert harness.metric(samples, "pytest_last_sum", model="metrics") == 100
    assert harness.metric(samples, "pytest_input_sum_bucket", le="1") == 1
    assert harness.metric(samples, "pytest_input_sum_bucket", le="10") == 2
    assert harness.metric(samples, "pytest_input_sum_count") == 3
    log = server.log()
    for level, text in (("I", "info"), ("W", "warning"), ("E", "error"), ("V", "verbose")):
        assert any(line.startswith(level) and "model.py" in line and "metrics model " + text in line
                   for line in log.splitlines()), text


def test_instances_readiness_and_finalize(server, models):
    client = server.grpc_client()
    results = []
    threads = [threading.Thread(target=lambda: results.append(
        client.infer("lifecycle", grpc_inputs(("IN", np.array([1], np.float32)))).as_numpy("OUT")[0])) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 16 and len(set(results)) <= 2
    pids = set(results)
    folder = os.path.join(models, "lifecycle")
    assert client.is_model_ready("lifecycle")
    open(os.path.join(folder, "not_ready"), "w").close()
    try:
        assert not client.is_model_ready("lifecycle")
        assert not server.http_client().is_model_ready("lifecycle")
    finally:
        os.remove(os.path.join(folder, "not_ready"))
    assert client.is_model_ready("lifecycle")
    assert len(stub_pids(server)) == 12, "one stub per instance: eleven models, two instances of lifecycle"


def stub_pids(server):
    """Stub processes of this server (their command line names the stub script)."""
    out = subprocess.run(["ps", "-eo", "pid,ppid,args"], capture_output=True, text=True).stdout
    pids = []
    for line in out.splitlines()[1:]:
        pid, ppid, args = line.split(None, 2)
        if int(ppid) == server.proc.pid and "nereid_stub.py" in args:
            pids.append(int(pid))
    return pids


def test_unload_runs_finalize_and_reaps(tmp_path, start_server):
    write_model(tmp_path, "lifecycle", LIFECYCLE_CONFIG + "instance_group [ { count: 2 kind: KIND_CPU } ]\n", LIFECYCLE)
    srv = start_server(str(tmp_path), "--model-control-mode=explicit", "--load-model=lifecycle", env=python_env())
    pids = stub_pids(srv)
    assert len(pids) == 2
    srv.http_client().unload_model("lifecycle")
    assert stub_pids(srv) == []
    finalized = sorted(f for f in os.listdir(tmp_path / "lifecycle") if f.startswith("finalized."))
    assert finalized == sorted("finalized.%d" % p for p in pids)
    srv.http_client().load_model("lifecycle")
    assert len(stub_pids(srv)) == 2


# The model loading API from a model: loads, checks and unloads add_sub (explicit mode).
LOADER = """
    import numpy as np
    import triton_python_backend_utils as pb_utils

    class TritonPythonModel:
        def execute(self, requests):
            steps = []
            steps.append(pb_utils.is_model_ready("add_sub"))
            pb_utils.load_model("add_sub")
            steps.append(pb_utils.is_model_ready("add_sub"))
            steps.append(pb_utils.is_model_ready("add_sub", "1"))
            pb_utils.unload_model("add_sub")
            steps.append(pb_utils.is_model_ready("add_sub"))
            try:
                pb_utils.load_model("not_there")
                steps.append(True)
            except pb_utils.TritonModelException:
                steps.append(False)
            out = np.array(steps, np.bool_)
            return [pb_utils.InferenceResponse([pb_utils.Tensor("OUT", out)]) for _ in requests]
"""


def test_model_loading_api(tmp_path, start_server):
    write_model(tmp_path, "add_sub", ADD_SUB_CONFIG, ADD_SUB)
    write_model(tmp_path, "loader", io("input", "IN", "TYPE_FP32", [1]) + io("output", "OUT", "TYPE_BOOL", [5]), LOADER)
    srv = start_server(str(tmp_path), "--model-control-mode=explicit", "--load-model=loader", env=python_env())
    result = srv.http_client().infer("loader", http_inputs(("IN", np.array([1], np.float32))))
    assert result.as_numpy("OUT").tolist() == [False, True, True, False, False]


def test_large_tensors_cross_through_shared_memory(server):
    # 64 MB, the size: the input reaches numpy as a view of shared memory and an
    # identity answers with a slice of the request's own input.
    data = np.random.default_rng(0).random((1, 16_000_000), dtype=np.float32)
    client = server.grpc_client()
    result = client.infer("inspect", grpc_inputs(("IN", data)))
    assert json.loads(result.as_numpy("INFO")[0])["shared_memory"] is True
    np.testing.assert_array_equal(result.as_numpy("OUT"), data)


def test_execution_environments(tmp_path, start_server):
    """EXECUTION_ENV_PATH: a venv folder (through $$TRITON_MODEL_DIRECTORY), and a conda-pack
    style archive unpacked once into the cache. The server's own `python3` here has no numpy,
    so only the environments can run the stubs."""
    venv = os.path.dirname(VENV_BIN)
    folder = write_model(tmp_path / "repo", "in_venv", ADD_SUB_CONFIG + 'parameters { key: "EXECUTION_ENV_PATH" value { string_value: "$$TRITON_MODEL_DIRECTORY/env" } }\n', ADD_SUB)
    os.symlink(venv, os.path.join(folder, "env"))
    # An archive whose bin/python3 hands over to the venv's interpreter.
    packed = write_model(tmp_path / "repo", "in_archive", ADD_SUB_CONFIG + 'parameters { key: "EXECUTION_ENV_PATH" value { string_value: "$$TRITON_MODEL_DIRECTORY/env.tar.gz" } }\n', ADD_SUB)
    launcher = tmp_path / "python3"
    launcher.write_text('#!/bin/sh\nexec "%s" "$@"\n' % os.path.join(VENV_BIN, "python3"))
    launcher.chmod(0o755)
    with tarfile.open(os.path.join(packed, "env.tar.gz"), "w:gz") as archive:
        archive.add(str(launcher), arcname="bin/python3")
    plain = write_model(tmp_path / "repo", "plain", ADD_SUB_CONFIG, ADD_SUB)
    bare_path = os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if os.path.abspath(p) != VENV_BIN)
    has_numpy = subprocess.run(["python3", "-c", "import numpy"], env={"PATH": bare_path}, capture_output=True).returncode == 0
    cache = tmp_path / "cache"
    srv = start_server(str(tmp_path / "repo"), "--exit-on-error=false", wait_for="live", env={"PATH": bare_path, "XDG_CACHE_HOME": str(cache)})
    harness.wait_until(lambda: srv.http_client().is_model_ready("in_archive"), timeout=60, message="in_archive ready")
    a, b = np.ones(4, np.float32), np.arange(4, dtype=np.float32)
    for model in ("in_venv", "in_archive"):
        result = srv.http_client().infer(model, http_inputs(("INPUT0", a), ("INPUT1", b)))
        np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a + b)
    unpacked = [os.path.join(d, "env", "bin", "python3") for d in (cache / "nereid" / "python-envs").iterdir()]
    assert len(unpacked) == 1 and os.path.isfile(unpacked[0])
    if not has_numpy:
        assert not srv.http_client().is_model_ready("plain")
        index = {m["name"]: m for m in srv.http_client().get_model_repository_index()}
        assert "numpy" in index["plain"]["reason"]
    # Unchanged, the archive is not unpacked again.
    marker = os.path.join(os.path.dirname(unpacked[0]), "marker")
    open(marker, "w").close()
    srv.http_client().close()
    srv.stop(expect_code=0)
    srv = start_server(str(tmp_path / "repo"), "--model-control-mode=explicit", "--load-model=in_archive",
                       env={"PATH": bare_path, "XDG_CACHE_HOME": str(cache)})
    assert srv.http_client().is_model_ready("in_archive") and os.path.exists(marker)
