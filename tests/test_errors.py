"""Bad requests get Triton's error texts and status codes, and never take the server down.

Texts and codes come from Triton's source (triton-inference-server/server src/http_server.cc,
src/grpc/infer_handler.cc, src/common.cc; triton-inference-server/core src/infer_request.cc,
src/model.cc, src/model_repository_manager/*.cc, sequence_batch_scheduler/*). HTTP status follows
HttpCodeFromError: INVALID_ARG -> 400, NOT_FOUND -> 404, INTERNAL -> 500, UNAVAILABLE -> 503,
UNSUPPORTED -> 501. TritonJson parse/access errors are INTERNAL in Triton, hence the 500s below
(Triton's own qa/L0_http tests expect 500 for them too).

After every test an autouse fixture checks that the server still answers good requests on HTTP
and gRPC.
"""

import json
import re

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

import harness
from tensors import add_sub_inputs, add_sub_operands, check_add_sub, infer_inputs, requested_outputs

pytestmark = pytest.mark.timeout(60)

SHAPE_NOTE = (
    "NOTE: Setting a non-zero max_batch_size in the model config requires a batch dimension to be "
    "prepended to each input shape. If you want to specify the full shape including the batch dim "
    "in your input dims config, try setting max_batch_size to zero. See the model configuration "
    "docs for more info on max_batch_size."
)
NO_ID = "[request id: <id_unknown>] "


@pytest.fixture(autouse=True)
def still_serving(server):
    yield
    for module, url in ((httpclient, server.http_url), (grpcclient, server.grpc_url)):
        client = module.InferenceServerClient(url)
        try:
            inputs, a, b = add_sub_inputs(module, batch=2, seed=99)
            check_add_sub(client.infer("simple", inputs), a, b)
        finally:
            client.close()
    assert server.proc.poll() is None, "server exited\n" + server.describe()


def i32(shape, fill=1):
    return np.full(shape, fill, dtype=np.int32)


# (id, model, version, {input name: array}, requested outputs, kwargs, HTTP status, gRPC code, message)
CORE_ERRORS = [
    ("unknown_model", "no_such_model", "", {"INPUT0": i32((1, 16)), "INPUT1": i32((1, 16))}, None, {},
     404, grpc.StatusCode.NOT_FOUND, "Request for unknown model: 'no_such_model' is not found"),
    ("unknown_version", "simple", "7", {"INPUT0": i32((1, 16)), "INPUT1": i32((1, 16))}, None, {},
     404, grpc.StatusCode.NOT_FOUND, "Request for unknown model: 'simple' version 7 is not found"),
    ("unexpected_input", "simple", "", {"INPUT0": i32((1, 16)), "X": i32((1, 16))}, None, {},
     400, grpc.StatusCode.INVALID_ARGUMENT, "unexpected inference input 'X' for model 'simple'"),
    ("missing_input", "simple", "", {"INPUT0": i32((1, 16))}, None, {},
     400, grpc.StatusCode.INVALID_ARGUMENT,
     NO_ID + "expected 2 inputs but got 1 inputs for model 'simple'. Got input(s) ['INPUT0'], but "
     "missing required input(s) ['INPUT1']. Please provide all required input(s)."),
    ("missing_input_with_id", "simple", "", {"INPUT1": i32((1, 16))}, None, {"request_id": "abc"},
     400, grpc.StatusCode.INVALID_ARGUMENT,
     "[request id: abc] expected 2 inputs but got 1 inputs for model 'simple'. Got input(s) ['INPUT1'], "
     "but missing required input(s) ['INPUT0']. Please provide all required input(s)."),
    ("wrong_shape", "simple", "", {"INPUT0": i32((1, 15)), "INPUT1": i32((1, 16))}, None, {},
     400, grpc.StatusCode.INVALID_ARGUMENT,
     NO_ID + "unexpected shape for input 'INPUT0' for model 'simple'. Expected [-1,16], got [1,15]. "
     + SHAPE_NOTE),
    ("wrong_rank", "simple", "", {"INPUT0": i32((1, 16)), "INPUT1": i32((1, 4, 4))}, None, {},
     400, grpc.StatusCode.INVALID_ARGUMENT,
     NO_ID + "unexpected shape for input 'INPUT1' for model 'simple'. Expected [-1,16], got [1,4,4]. "
     + SHAPE_NOTE),
    ("wrong_datatype", "simple", "", {"INPUT0": np.ones((1, 16), np.float32), "INPUT1": i32((1, 16))}, None, {},
     400, grpc.StatusCode.INVALID_ARGUMENT,
     NO_ID + "inference input 'INPUT0' data-type is 'FP32', but model 'simple' expects 'INT32'"),
    ("batch_too_large", "simple", "", {"INPUT0": i32((9, 16)), "INPUT1": i32((9, 16))}, None, {},
     400, grpc.StatusCode.INVALID_ARGUMENT,
     NO_ID + "inference request batch-size must be <= 8 for 'simple'"),
    ("unknown_output", "simple", "", {"INPUT0": i32((1, 16)), "INPUT1": i32((1, 16))}, ["OUTPUT9"], {},
     400, grpc.StatusCode.INVALID_ARGUMENT, "unexpected inference output 'OUTPUT9' for model 'simple'"),
    ("sequence_without_id", "simple_sequence", "", {"INPUT": i32((1, 1))}, None, {},
     400, grpc.StatusCode.INVALID_ARGUMENT,
     "inference request to model 'simple_sequence' must specify a non-zero or non-empty correlation ID"),
    ("sequence_without_start", "simple_sequence", "", {"INPUT": i32((1, 1))}, None, {"sequence_id": 4242},
     400, grpc.StatusCode.INVALID_ARGUMENT,
     "inference request for sequence 4242 to model 'simple_sequence' must specify the START flag on "
     "the first request of the sequence"),
]


@pytest.mark.parametrize("case", CORE_ERRORS, ids=[c[0] for c in CORE_ERRORS])
def test_http_error(http_client, case):
    _, model, version, arrays, outputs, kwargs, status, _, message = case
    outs = requested_outputs(httpclient, outputs) if outputs else None
    with pytest.raises(InferenceServerException) as err:
        http_client.infer(model, infer_inputs(httpclient, arrays), model_version=version, outputs=outs, **kwargs)
    assert err.value.message() == message
    assert err.value.status() == str(status)


@pytest.mark.parametrize("case", CORE_ERRORS, ids=[c[0] for c in CORE_ERRORS])
def test_grpc_error(grpc_client, case):
    _, model, version, arrays, outputs, kwargs, _, code, message = case
    outs = requested_outputs(grpcclient, outputs) if outputs else None
    with pytest.raises(InferenceServerException) as err:
        grpc_client.infer(model, infer_inputs(grpcclient, arrays), model_version=version, outputs=outs, **kwargs)
    assert err.value.message() == message
    assert err.value.status() == str(code)


def test_batch_size_mismatch(http_client, grpc_client):
    arrays = {"INPUT0": i32((1, 16)), "INPUT1": i32((2, 16))}
    pattern = re.escape(NO_ID) + r"input '(INPUT0|INPUT1)' batch size does not match other inputs for 'simple'"
    for module, client in ((httpclient, http_client), (grpcclient, grpc_client)):
        with pytest.raises(InferenceServerException) as err:
            client.infer("simple", infer_inputs(module, arrays))
        assert re.fullmatch(pattern, err.value.message()), err.value.message()


def test_too_many_inputs(http_client):
    arrays = {"INPUT0": i32((1, 16)), "INPUT1": i32((1, 16)), "INPUT2": i32((1, 16))}
    with pytest.raises(InferenceServerException) as err:
        http_client.infer("simple", infer_inputs(httpclient, arrays))
    assert err.value.message().startswith(NO_ID + "expected 2 inputs but got 3 inputs for model 'simple'. Got input(s) [")
    assert err.value.status() == "400"


# -- HTTP-only errors: the JSON header and the binary tensor extension ---------------------------
def post_infer(server, body, headers=None, model="simple"):
    status, _, data = harness.request(server.http_port, "POST", "/v2/models/%s/infer" % model, body, headers or {})
    return status, json.loads(data)


def binary_header(sizes, shapes=((1, 16), (1, 16))):
    return {"inputs": [
        {"name": "INPUT%d" % i, "datatype": "INT32", "shape": list(shape), "parameters": {"binary_data_size": size}}
        for i, (size, shape) in enumerate(zip(sizes, shapes))
    ]}


def test_malformed_json(server):
    status, body = post_infer(server, b'{"inputs": [', {"Content-Type": "application/json"})
    assert status == 500
    assert body["error"].startswith("failed to parse the request JSON buffer: "), body
    assert re.search(r" at \d+$", body["error"]), body


def test_json_not_an_object_with_inputs(server):
    status, body = post_infer(server, b'{"outputs": []}')
    assert status == 500
    assert body["error"].startswith("Unable to parse 'inputs'"), body


def test_binary_extra_bytes(server):
    a, b = add_sub_operands()
    body, headers = harness.binary_infer_body(binary_header([64, 64]), [a.tobytes(), b.tobytes(), b"\0" * 8])
    assert post_infer(server, body, headers) == (400, {"error": "unexpected additional input data for model 'simple'"})


def test_binary_missing_bytes(server):
    a, b = add_sub_operands()
    body, headers = harness.binary_infer_body(binary_header([64, 64]), [a.tobytes(), b.tobytes()[:60]])
    assert post_infer(server, body, headers) == (
        400, {"error": "unexpected size for input 'INPUT1', expecting 4 additional bytes for model 'simple'"})


def test_binary_size_disagrees_with_shape(server):
    # The sizes add up to the body, but INPUT0's 60 bytes are not a [1,16] INT32 tensor.
    a, b = add_sub_operands()
    body, headers = harness.binary_infer_body(binary_header([60, 64]), [a.tobytes()[:60], b.tobytes()])
    assert post_infer(server, body, headers) == (
        400, {"error": NO_ID + "input byte size mismatch for input 'INPUT0' for model 'simple'. Expected 64, got 60"})


def test_absurd_binary_data_size(server):
    a, b = add_sub_operands()
    huge = 1 << 62
    body, headers = harness.binary_infer_body(binary_header([huge, 64]), [a.tobytes(), b.tobytes()])
    # Triton consumes what the body holds (128 bytes) and reports what is still missing.
    assert post_infer(server, body, headers) == (
        400, {"error": "unexpected size for input 'INPUT0', expecting %d additional bytes for model 'simple'"
                       % (huge - 128)})


def test_negative_binary_data_size(server):
    a, b = add_sub_operands()
    body, headers = harness.binary_infer_body(binary_header([-64, 64]), [a.tobytes(), b.tobytes()])
    assert post_infer(server, body, headers) == (
        500, {"error": "Unable to parse 'binary_data_size': attempt to access JSON non-unsigned-integer as "
                       "unsigned-integer"})


def test_header_length_beyond_body(server):
    a, b = add_sub_operands()
    body, headers = harness.binary_infer_body(binary_header([64, 64]), [a.tobytes(), b.tobytes()])
    headers["Inference-Header-Content-Length"] = str(len(body) + 100)
    assert post_infer(server, body, headers) == (
        400, {"error": "inference header size should be in range (0, %d), got: %d" % (len(body), len(body) + 100)})


def test_header_length_not_a_number(server):
    a, b = add_sub_operands()
    body, headers = harness.binary_infer_body(binary_header([64, 64]), [a.tobytes(), b.tobytes()])
    headers["Inference-Header-Content-Length"] = "abc"
    assert post_infer(server, body, headers) == (
        400, {"error": "Unable to parse Inference-Header-Content-Length, got: abc"})
    headers["Inference-Header-Content-Length"] = "99999999999"
    assert post_infer(server, body, headers) == (
        400, {"error": "Unable to parse Inference-Header-Content-Length, value is out of range "
                       "[ -2147483648, 2147483647 ], got: 99999999999"})


def test_data_and_binary_both_set(server):
    header = binary_header([64, 64])
    header["inputs"][0]["data"] = list(range(16))
    a, b = add_sub_operands()
    body, headers = harness.binary_infer_body(header, [a.tobytes(), b.tobytes()])
    assert post_infer(server, body, headers) == (400, {"error": (
        "Input must set only one of the following fields: 'data', 'binary_data_size' in 'parameters', "
        "'shared_memory_region' in 'parameters'. But set 'data' 'binary_data_size'")})


def test_input_without_data(server):
    payload = {"inputs": [{"name": "INPUT0", "datatype": "INT32", "shape": [1, 16]},
                          {"name": "INPUT1", "datatype": "INT32", "shape": [1, 16], "data": list(range(16))}]}
    assert post_infer(server, json.dumps(payload)) == (400, {"error": (
        "Input must set only one of the following fields: 'data', 'binary_data_size' in 'parameters', "
        "'shared_memory_region' in 'parameters'. But no field is set")})


def test_json_data_fewer_than_shape(server):
    # Same request as Triton's qa/L0_http/test.sh.
    payload = {"inputs": [{"name": "INPUT0", "datatype": "INT32", "shape": [1, 16], "data": list(range(1, 16))}]}
    assert post_infer(server, json.dumps(payload)) == (
        500, {"error": "Failed to parse 'data' field: shape does not match true shape"})


def test_json_data_more_than_shape(server):
    payload = {"inputs": [{"name": "INPUT0", "datatype": "INT32", "shape": [1, 16], "data": list(range(1, 19))}]}
    assert post_infer(server, json.dumps(payload)) == (
        500, {"error": "Unable to parse 'data': Shape does not match true shape of 'data' field"})


def test_json_negative_dimension(server):
    payload = {"inputs": [{"name": "INPUT0", "datatype": "INT32", "shape": [1, -16], "data": list(range(16))},
                          {"name": "INPUT1", "datatype": "INT32", "shape": [1, 16], "data": list(range(16))}]}
    assert post_infer(server, json.dumps(payload)) == (
        500, {"error": "Unable to parse 'shape': attempt to access JSON non-unsigned-integer as unsigned-integer"})


def test_json_absurd_shape(server):
    huge = 1 << 62
    payload = {"inputs": [{"name": "INPUT0", "datatype": "INT32", "shape": [huge, 4], "data": [1]},
                          {"name": "INPUT1", "datatype": "INT32", "shape": [1, 16], "data": list(range(16))}]}
    assert post_infer(server, json.dumps(payload)) == (400, {"error": (
        "invalid shape for input 'INPUT0': shape [%d,4] causes total element count to exceed maximum size of "
        "9223372036854775807" % huge)})


def test_json_shape_beyond_input_limit(server):
    payload = {"inputs": [{"name": "INPUT0", "datatype": "INT32", "shape": [1, 100000000], "data": [1]},
                          {"name": "INPUT1", "datatype": "INT32", "shape": [1, 16], "data": list(range(16))}]}
    assert post_infer(server, json.dumps(payload)) == (400, {"error": (
        "JSON input 'INPUT0' has a byte_size (400000000 bytes) that exceeds the maximum allowed value of "
        "67108864 bytes. Use --http-max-input-size to increase the limit.")})


def test_json_data_of_wrong_type(server):
    payload = {"inputs": [{"name": "INPUT0", "datatype": "INT32", "shape": [1, 2], "data": ["a", "b"]},
                          {"name": "INPUT1", "datatype": "INT32", "shape": [1, 2], "data": [1, 2]}]}
    status, body = post_infer(server, json.dumps(payload))
    assert status == 500
    assert body["error"].startswith("Unable to parse 'data': "), body


def test_unsupported_content_encoding(server):
    a, b = add_sub_operands()
    body, headers = harness.binary_infer_body(binary_header([64, 64]), [a.tobytes(), b.tobytes()])
    headers["Content-Encoding"] = "br"
    status, resp_headers, data = harness.request(server.http_port, "POST", "/v2/models/simple/infer", body, headers)
    assert (status, json.loads(data)) == (501, {"error": "Unsupported compression type"})
    assert resp_headers.get("accept-encoding") == "gzip, deflate"


def test_corrupt_gzip_body(server):
    status, _, data = harness.request(server.http_port, "POST", "/v2/models/simple/infer", b"definitely not gzip",
                                      {"Content-Encoding": "gzip"})
    assert status in (400, 500), (status, data)
    assert "error" in json.loads(data)


def test_invalid_version_route(server):
    # Versions must be digits in the route (http_server.cc model_regex_), anything else is no route.
    status, _, data = harness.request(server.http_port, "POST", "/v2/models/simple/versions/abc/infer", b"{}")
    assert (status, json.loads(data)) == (404, {"error": "Not Found"})


def test_get_on_infer_route(server):
    status, _, data = harness.request(server.http_port, "GET", "/v2/models/simple/infer")
    assert (status, json.loads(data)) == (405, {"error": "Method Not Allowed"})


def test_unknown_model_metadata_and_config(server, http_client, grpc_client):
    for path in ("/v2/models/nope", "/v2/models/nope/config"):
        status, _, data = harness.request(server.http_port, "GET", path)
        assert (status, json.loads(data)) == (404, {"error": "Request for unknown model: 'nope' is not found"}), path
    with pytest.raises(InferenceServerException) as err:
        grpc_client.get_model_config("nope")
    assert err.value.message() == "Request for unknown model: 'nope' is not found"
    assert err.value.status() == str(grpc.StatusCode.NOT_FOUND)


# -- gRPC-only errors ------------------------------------------------------------------------------
def _stub(server):
    channel = grpc.insecure_channel(server.grpc_url)
    return channel, service_pb2_grpc.GRPCInferenceServiceStub(channel)


def test_grpc_raw_contents_wrong_size(server):
    channel, stub = _stub(server)
    with channel:
        request = service_pb2.ModelInferRequest(model_name="simple")
        for name in ("INPUT0", "INPUT1"):
            request.inputs.add(name=name, datatype="INT32", shape=[1, 16])
        request.raw_input_contents.extend([b"\0" * 60, b"\0" * 64])
        with pytest.raises(grpc.RpcError) as err:
            stub.ModelInfer(request, timeout=30)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert err.value.details() == (
            NO_ID + "input byte size mismatch for input 'INPUT0' for model 'simple'. Expected 64, got 60")


def test_grpc_raw_contents_missing(server):
    channel, stub = _stub(server)
    with channel:
        request = service_pb2.ModelInferRequest(model_name="simple")
        for name in ("INPUT0", "INPUT1"):
            request.inputs.add(name=name, datatype="INT32", shape=[1, 16])
        request.raw_input_contents.append(b"\0" * 64)
        with pytest.raises(grpc.RpcError) as err:
            stub.ModelInfer(request, timeout=30)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert err.value.details() == "unable to find data for input tensor 'INPUT1' for model 'simple' in request."


def test_grpc_contents_and_raw_contents(server):
    channel, stub = _stub(server)
    with channel:
        request = service_pb2.ModelInferRequest(model_name="simple")
        first = request.inputs.add(name="INPUT0", datatype="INT32", shape=[1, 16])
        first.contents.int_contents.extend(range(16))
        request.inputs.add(name="INPUT1", datatype="INT32", shape=[1, 16])
        request.raw_input_contents.append(b"\0" * 64)
        with pytest.raises(grpc.RpcError) as err:
            stub.ModelInfer(request, timeout=30)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert err.value.details() == (
            "contents field must not be specified when using raw_input_contents for 'INPUT0' for model 'simple'")
