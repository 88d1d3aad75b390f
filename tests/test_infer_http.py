"""Inference over HTTP/REST (KServe v2 + binary tensor extension) with tritonclient.http, its
aio client, and raw requests; expected values computed with numpy."""

import asyncio
import gzip
import json
import struct
import zlib

import numpy as np
import pytest
import tritonclient.http as httpclient
import tritonclient.http.aio as aiohttpclient

import harness
from tensors import (ADD_SUB_MODELS, add_sub_inputs, add_sub_operands, check_add_sub,
                     check_string_add_sub, infer_inputs, requested_outputs, string_operands)

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize("binary_in", [True, False], ids=["binary_in", "json_in"])
@pytest.mark.parametrize("binary_out", [True, False, None], ids=["binary_out", "json_out", "default_out"])
def test_simple(http_client, binary_in, binary_out):
    inputs, a, b = add_sub_inputs(httpclient, binary=binary_in, seed=1)
    outputs = None if binary_out is None else requested_outputs(httpclient, ["OUTPUT0", "OUTPUT1"], binary_out)
    result = http_client.infer("simple", inputs, outputs=outputs)
    check_add_sub(result, a, b)
    response = result.get_response()
    assert response["model_name"] == "simple"
    assert response["model_version"] == "1"
    for out in response["outputs"]:
        assert out["datatype"] == "INT32"
        assert out["shape"] == [1, 16]
        if binary_out is False:
            assert "data" in out
            assert "binary_data_size" not in out.get("parameters", {})
        else:
            assert out["parameters"]["binary_data_size"] == 64
            assert "data" not in out


@pytest.mark.parametrize("batch", [1, 2, 5, 8])
def test_simple_batches(http_client, batch):
    inputs, a, b = add_sub_inputs(httpclient, batch=batch, seed=batch)
    result = http_client.infer("simple", inputs)
    check_add_sub(result, a, b)
    assert result.get_output("OUTPUT0")["shape"] == [batch, 16]


@pytest.mark.parametrize("model", sorted(ADD_SUB_MODELS))
@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_add_sub_models(http_client, model, binary):
    inputs, a, b = add_sub_inputs(httpclient, ADD_SUB_MODELS[model], batch=3, seed=7, binary=binary)
    outputs = requested_outputs(httpclient, ["OUTPUT0", "OUTPUT1"], binary)
    check_add_sub(http_client.infer(model, inputs, outputs=outputs), a, b)


def test_fp32_fractional_values(http_client):
    a = np.linspace(-3.25, 7.5, 16, dtype=np.float32).reshape(1, 16)
    b = np.full((1, 16), 0.125, dtype=np.float32)
    for binary in (True, False):
        result = http_client.infer(
            "simple_fp32", infer_inputs(httpclient, {"INPUT0": a, "INPUT1": b}, binary),
            outputs=requested_outputs(httpclient, ["OUTPUT0", "OUTPUT1"], binary))
        check_add_sub(result, a, b)


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_simple_string(http_client, binary):
    in0, in1, a, b = string_operands(batch=2, seed=3)
    result = http_client.infer(
        "simple_string", infer_inputs(httpclient, {"INPUT0": in0, "INPUT1": in1}, binary),
        outputs=requested_outputs(httpclient, ["OUTPUT0", "OUTPUT1"], binary))
    check_string_add_sub(result, a, b)
    assert result.get_output("OUTPUT0")["datatype"] == "BYTES"


def test_simple_string_raw_json(server):
    payload = {"inputs": [
        {"name": "INPUT0", "datatype": "BYTES", "shape": [1, 16], "data": [str(i) for i in range(16)]},
        {"name": "INPUT1", "datatype": "BYTES", "shape": [1, 16], "data": ["1"] * 16},
    ]}
    status, body = harness.request_json(server.http_port, "POST", "/v2/models/simple_string/infer", payload)
    assert status == 200, body
    outputs = {o["name"]: o for o in body["outputs"]}
    assert outputs["OUTPUT0"]["data"] == [str(i + 1) for i in range(16)]
    assert outputs["OUTPUT1"]["data"] == [str(i - 1) for i in range(16)]
    assert outputs["OUTPUT0"]["shape"] == [1, 16]


@pytest.mark.parametrize("shape", [(1, 1), (1, 5), (3, 7), (8, 100)])
def test_identity_variable_length(http_client, shape):
    x = np.random.default_rng(11).standard_normal(shape).astype(np.float32)
    result = http_client.infer("simple_identity", infer_inputs(httpclient, {"INPUT0": x}))
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), x)
    assert result.get_output("OUTPUT0")["shape"] == list(shape)


def test_identity_large_tensor(http_client):
    x = np.arange(8 * 250000, dtype=np.float32).reshape(8, 250000)  # 8 MB
    result = http_client.infer("simple_identity", infer_inputs(httpclient, {"INPUT0": x}))
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), x)


@pytest.mark.parametrize("name", ["OUTPUT0", "OUTPUT1"])
def test_requested_output_subset(http_client, name):
    inputs, a, b = add_sub_inputs(httpclient, seed=5)
    result = http_client.infer("simple", inputs, outputs=requested_outputs(httpclient, [name]))
    check_add_sub(result, a, b, outputs=[name])
    assert [o["name"] for o in result.get_response()["outputs"]] == [name]
    other = "OUTPUT1" if name == "OUTPUT0" else "OUTPUT0"
    assert result.as_numpy(other) is None


def test_mixed_binary_and_json_outputs(http_client):
    inputs, a, b = add_sub_inputs(httpclient, seed=6)
    outputs = [httpclient.InferRequestedOutput("OUTPUT0", binary_data=True),
               httpclient.InferRequestedOutput("OUTPUT1", binary_data=False)]
    result = http_client.infer("simple", inputs, outputs=outputs)
    check_add_sub(result, a, b)
    assert "data" not in result.get_output("OUTPUT0")
    assert result.get_output("OUTPUT1")["data"] == (a - b).flatten().tolist()


def _split_binary_response(headers, body):
    if headers.get("content-encoding") == "gzip":
        body = gzip.decompress(body)
    elif headers.get("content-encoding") == "deflate":
        body = zlib.decompress(body)
    length = int(headers["inference-header-content-length"])
    return json.loads(body[:length]), body[length:]


def test_raw_json_request_and_response(server):
    a, b = add_sub_operands(seed=8)
    payload = {
        "id": "raw-1",
        "inputs": [
            {"name": "INPUT0", "datatype": "INT32", "shape": [1, 16], "data": a.flatten().tolist()},
            # Nested row-major data is accepted too.
            {"name": "INPUT1", "datatype": "INT32", "shape": [1, 16], "data": b.tolist()},
        ],
    }
    status, body = harness.request_json(server.http_port, "POST", "/v2/models/simple/infer", payload)
    assert status == 200, body
    assert body["id"] == "raw-1"
    assert body["model_name"] == "simple"
    assert body["model_version"] == "1"
    outputs = {o["name"]: o for o in body["outputs"]}
    assert set(outputs) == {"OUTPUT0", "OUTPUT1"}
    assert outputs["OUTPUT0"] == {"name": "OUTPUT0", "datatype": "INT32", "shape": [1, 16],
                                  "data": (a + b).flatten().tolist()}
    assert outputs["OUTPUT1"]["data"] == (a - b).flatten().tolist()
    # The versioned route answers the same.
    status, again = harness.request_json(server.http_port, "POST", "/v2/models/simple/versions/1/infer", payload)
    assert status == 200 and again["outputs"] == body["outputs"]


def test_raw_binary_data_output(server):
    # binary_data_output in the request parameters asks for every output in binary.
    a, b = add_sub_operands(seed=9)
    header = {"parameters": {"binary_data_output": True}, "inputs": [
        {"name": "INPUT0", "datatype": "INT32", "shape": [1, 16], "parameters": {"binary_data_size": 64}},
        {"name": "INPUT1", "datatype": "INT32", "shape": [1, 16], "parameters": {"binary_data_size": 64}},
    ]}
    body, headers = harness.binary_infer_body(header, [a.tobytes(), b.tobytes()])
    status, resp_headers, resp = harness.request(server.http_port, "POST", "/v2/models/simple/infer", body, headers)
    assert status == 200, resp
    head, blob = _split_binary_response(resp_headers, resp)
    assert resp_headers["content-type"] == "application/octet-stream"
    offset = 0
    got = {}
    for out in head["outputs"]:
        assert "data" not in out
        size = out["parameters"]["binary_data_size"]
        got[out["name"]] = np.frombuffer(blob[offset:offset + size], dtype=np.int32).reshape(out["shape"])
        offset += size
    assert offset == len(blob)
    np.testing.assert_array_equal(got["OUTPUT0"], a + b)
    np.testing.assert_array_equal(got["OUTPUT1"], a - b)


def test_raw_binary_bytes_tensor(server):
    # BYTES in binary form: each element is a 4-byte little-endian length and the bytes.
    def encode(values):
        return b"".join(struct.pack("<I", len(v)) + v for v in values)

    x = [str(i * 3).encode() for i in range(16)]
    y = [str(-i).encode() for i in range(16)]
    bx, by = encode(x), encode(y)
    header = {"inputs": [
        {"name": "INPUT0", "datatype": "BYTES", "shape": [1, 16], "parameters": {"binary_data_size": len(bx)}},
        {"name": "INPUT1", "datatype": "BYTES", "shape": [1, 16], "parameters": {"binary_data_size": len(by)}},
    ], "outputs": [{"name": "OUTPUT0", "parameters": {"binary_data": False}}]}
    body, headers = harness.binary_infer_body(header, [bx, by])
    status, _, resp = harness.request(server.http_port, "POST", "/v2/models/simple_string/infer", body, headers)
    assert status == 200, resp
    out = json.loads(resp)["outputs"]
    assert [o["name"] for o in out] == ["OUTPUT0"]
    assert out[0]["data"] == [str(i * 3 - i) for i in range(16)]


def _expected_classes(values, k):
    order = sorted(range(len(values)), key=lambda i: -values[i])[:k]
    return ["%f:%d" % (float(values[i]), i) for i in order]


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_classification(http_client, binary):
    rng = np.random.default_rng(12)
    a = rng.permutation(32)[:32].reshape(2, 16).astype(np.float32) * 1.5
    b = np.full((2, 16), 0.25, dtype=np.float32)
    outputs = [httpclient.InferRequestedOutput("OUTPUT0", binary_data=binary, class_count=3),
               httpclient.InferRequestedOutput("OUTPUT1", binary_data=binary)]
    result = http_client.infer("simple_fp32", infer_inputs(httpclient, {"INPUT0": a, "INPUT1": b}),
                               outputs=outputs)
    classes = result.as_numpy("OUTPUT0")
    out = result.get_output("OUTPUT0")
    assert out["datatype"] == "BYTES"
    assert out["shape"] == [2, 3]
    got = [[c.decode() if isinstance(c, bytes) else c for c in row] for row in classes]
    sums = a + b
    assert got == [_expected_classes(sums[i], 3) for i in range(2)]
    # The other output is untouched.
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), a - b)


def test_classification_count_larger_than_output(http_client):
    a = np.arange(16, dtype=np.float32).reshape(1, 16)
    b = np.zeros((1, 16), dtype=np.float32)
    result = http_client.infer(
        "simple_fp32", infer_inputs(httpclient, {"INPUT0": a, "INPUT1": b}),
        outputs=[httpclient.InferRequestedOutput("OUTPUT0", class_count=40)])
    got = [c.decode() for c in result.as_numpy("OUTPUT0")[0]]
    assert got == _expected_classes(a[0], 16)


def test_request_id_echoed(http_client):
    inputs, a, b = add_sub_inputs(httpclient)
    result = http_client.infer("simple", inputs, request_id="my-request-42")
    assert result.get_response()["id"] == "my-request-42"
    check_add_sub(result, a, b)
    # No id in the request -> no id in the response.
    assert "id" not in http_client.infer("simple", inputs).get_response()


@pytest.mark.parametrize("request_alg", [None, "gzip", "deflate"])
@pytest.mark.parametrize("response_alg", [None, "gzip", "deflate"])
def test_compression(http_client, request_alg, response_alg):
    inputs, a, b = add_sub_inputs(httpclient, batch=4, seed=13)
    result = http_client.infer("simple", inputs, request_compression_algorithm=request_alg,
                               response_compression_algorithm=response_alg)
    check_add_sub(result, a, b)


@pytest.mark.parametrize("alg", ["gzip", "deflate"])
def test_response_is_really_compressed(server, alg):
    a, b = add_sub_operands(seed=14)
    header = {"inputs": [
        {"name": "INPUT0", "datatype": "INT32", "shape": [1, 16], "parameters": {"binary_data_size": 64}},
        {"name": "INPUT1", "datatype": "INT32", "shape": [1, 16], "parameters": {"binary_data_size": 64}},
    ], "outputs": [{"name": "OUTPUT0", "parameters": {"binary_data": True}}]}
    body, headers = harness.binary_infer_body(header, [a.tobytes(), b.tobytes()])
    headers["Accept-Encoding"] = alg
    status, resp_headers, resp = harness.request(server.http_port, "POST", "/v2/models/simple/infer", body, headers)
    assert status == 200, resp
    assert resp_headers.get("content-encoding") == alg
    head, blob = _split_binary_response(resp_headers, resp)
    np.testing.assert_array_equal(np.frombuffer(blob, np.int32).reshape(1, 16), a + b)
    # And a compressed request body is accepted with Content-Encoding.
    compressed = gzip.compress(body) if alg == "gzip" else zlib.compress(body)
    headers = {"Content-Encoding": alg, "Inference-Header-Content-Length": headers["Inference-Header-Content-Length"]}
    status, resp_headers, resp = harness.request(server.http_port, "POST", "/v2/models/simple/infer", compressed, headers)
    assert status == 200, resp
    head, blob = _split_binary_response(resp_headers, resp)
    np.testing.assert_array_equal(np.frombuffer(blob, np.int32).reshape(1, 16), a + b)


def test_async_infer(server):
    client = httpclient.InferenceServerClient(server.http_url, concurrency=4)
    try:
        pending = []
        for seed in range(12):
            inputs, a, b = add_sub_inputs(httpclient, batch=1 + seed % 8, seed=100 + seed)
            pending.append((client.async_infer("simple", inputs, request_id=str(seed)), a, b, seed))
        for handle, a, b, seed in pending:
            result = handle.get_result(timeout=30)
            check_add_sub(result, a, b)
            assert result.get_response()["id"] == str(seed)
    finally:
        client.close()


def test_aio_client(server):
    async def run():
        async with aiohttpclient.InferenceServerClient(server.http_url) as client:
            assert await client.is_server_live()
            assert await client.is_server_ready()
            assert await client.is_model_ready("simple")
            assert (await client.get_server_metadata())["name"] == "triton"
            md = await client.get_model_metadata("simple")
            assert md["inputs"][0]["shape"] == [-1, 16]
            cfg = await client.get_model_config("simple")
            assert cfg["max_batch_size"] == 8
            jobs = []
            for seed in range(16):
                inputs, a, b = add_sub_inputs(aiohttpclient, batch=1 + seed % 8, seed=200 + seed)
                jobs.append((client.infer("simple", inputs, request_id="aio-%d" % seed), a, b, seed))
            results = await asyncio.gather(*(job for job, _, _, _ in jobs))
            for result, (_, a, b, seed) in zip(results, jobs):
                check_add_sub(result, a, b)
                assert result.get_response()["id"] == "aio-%d" % seed
            in0, in1, sa, sb = string_operands(seed=4)
            result = await client.infer("simple_string", infer_inputs(aiohttpclient, {"INPUT0": in0, "INPUT1": in1}),
                                        response_compression_algorithm="gzip")
            check_string_add_sub(result, sa, sb)
            stats = await client.get_inference_statistics("simple")
            assert stats["model_stats"][0]["name"] == "simple"

    asyncio.run(run())


def test_sequence_http(http_client):
    # simple_sequence computes OUTPUT = INPUT * READY + START (see its config.pbtxt).
    values = [11, 7, -3, 5]
    got = []
    for i, v in enumerate(values):
        inputs = infer_inputs(httpclient, {"INPUT": np.array([[v]], dtype=np.int32)})
        result = http_client.infer("simple_sequence", inputs, sequence_id=1001,
                                   sequence_start=(i == 0), sequence_end=(i == len(values) - 1))
        got.append(int(result.as_numpy("OUTPUT")[0][0]))
    assert got == [values[0] + 1] + values[1:]


def test_sequence_string_correlation_id_http(http_client):
    inputs = infer_inputs(httpclient, {"INPUT": np.array([[4]], dtype=np.int32)})
    first = http_client.infer("simple_sequence", inputs, sequence_id="seq-a", sequence_start=True)
    last = http_client.infer("simple_sequence", inputs, sequence_id="seq-a", sequence_end=True)
    assert int(first.as_numpy("OUTPUT")[0][0]) == 5
    assert int(last.as_numpy("OUTPUT")[0][0]) == 4
