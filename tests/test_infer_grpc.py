"""Inference over gRPC (inference.GRPCInferenceService) with tritonclient.grpc (sync, async_infer,
streaming), tritonclient.grpc.aio, and the raw protobuf service; expected values from numpy."""

import asyncio
import functools
import queue

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as aiogrpcclient
from tritonclient.grpc import service_pb2, service_pb2_grpc

from tensors import (ADD_SUB_MODELS, add_sub_inputs, add_sub_operands, check_add_sub,
                     check_string_add_sub, infer_inputs, requested_outputs, string_operands)

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize("batch", [1, 3, 8])
def test_simple(grpc_client, batch):
    inputs, a, b = add_sub_inputs(grpcclient, batch=batch, seed=20 + batch)
    result = grpc_client.infer("simple", inputs)
    check_add_sub(result, a, b)
    response = result.get_response()
    assert response.model_name == "simple"
    assert response.model_version == "1"
    assert [(o.name, o.datatype, list(o.shape)) for o in response.outputs] == [
        ("OUTPUT0", "INT32", [batch, 16]), ("OUTPUT1", "INT32", [batch, 16])]


@pytest.mark.parametrize("model", sorted(ADD_SUB_MODELS))
def test_add_sub_models(grpc_client, model):
    inputs, a, b = add_sub_inputs(grpcclient, ADD_SUB_MODELS[model], batch=2, seed=30)
    check_add_sub(grpc_client.infer(model, inputs, outputs=requested_outputs(grpcclient, ["OUTPUT0", "OUTPUT1"])),
                  a, b)


def test_simple_string(grpc_client):
    in0, in1, a, b = string_operands(batch=3, seed=31)
    result = grpc_client.infer("simple_string", infer_inputs(grpcclient, {"INPUT0": in0, "INPUT1": in1}))
    check_string_add_sub(result, a, b)


@pytest.mark.parametrize("shape", [(1, 1), (2, 9), (8, 1000)])
def test_identity(grpc_client, shape):
    x = np.random.default_rng(32).standard_normal(shape).astype(np.float32)
    result = grpc_client.infer("simple_identity", infer_inputs(grpcclient, {"INPUT0": x}))
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), x)


def test_requested_output_subset(grpc_client):
    inputs, a, b = add_sub_inputs(grpcclient, seed=33)
    result = grpc_client.infer("simple", inputs, outputs=requested_outputs(grpcclient, ["OUTPUT1"]))
    check_add_sub(result, a, b, outputs=["OUTPUT1"])
    assert [o.name for o in result.get_response().outputs] == ["OUTPUT1"]
    assert result.as_numpy("OUTPUT0") is None


def test_classification(grpc_client):
    a = np.array([[5, 1, 9, 3, 7, 2, 8, 0, 6, 4, 15, 11, 13, 10, 14, 12]], dtype=np.float32)
    b = np.full((1, 16), 0.5, dtype=np.float32)
    result = grpc_client.infer(
        "simple_fp32", infer_inputs(grpcclient, {"INPUT0": a, "INPUT1": b}),
        outputs=[grpcclient.InferRequestedOutput("OUTPUT0", class_count=4)])
    classes = [c.decode() for c in result.as_numpy("OUTPUT0")[0]]
    assert classes == ["15.500000:10", "14.500000:14", "13.500000:12", "12.500000:15"]
    out = result.get_output("OUTPUT0")
    assert out.datatype == "BYTES" and list(out.shape) == [1, 4]


def test_request_id_echoed(grpc_client):
    inputs, a, b = add_sub_inputs(grpcclient)
    result = grpc_client.infer("simple", inputs, request_id="grpc-id-7")
    assert result.get_response().id == "grpc-id-7"
    check_add_sub(result, a, b)


@pytest.mark.parametrize("alg", ["gzip", "deflate"])
def test_compression(grpc_client, alg):
    inputs, a, b = add_sub_inputs(grpcclient, batch=8, seed=34)
    check_add_sub(grpc_client.infer("simple", inputs, compression_algorithm=alg), a, b)


def test_async_infer_with_callback(grpc_client):
    done = queue.Queue()

    def callback(tag, result, error):
        done.put((tag, result, error))

    expected = {}
    for seed in range(10):
        inputs, a, b = add_sub_inputs(grpcclient, batch=1 + seed % 8, seed=300 + seed)
        expected[seed] = (a, b)
        grpc_client.async_infer("simple", inputs, functools.partial(callback, seed), request_id=str(seed))
    for _ in expected:
        tag, result, error = done.get(timeout=30)
        assert error is None, error
        check_add_sub(result, *expected[tag])
        assert result.get_response().id == str(tag)


def test_async_infer_error_reaches_callback(grpc_client):
    done = queue.Queue()
    inputs, _, _ = add_sub_inputs(grpcclient)
    grpc_client.async_infer("no_such_model", inputs, lambda result, error: done.put((result, error)))
    result, error = done.get(timeout=30)
    assert result is None
    assert "Request for unknown model: 'no_such_model' is not found" in error.message()


def test_streaming(server):
    responses = queue.Queue()
    client = grpcclient.InferenceServerClient(server.grpc_url)
    try:
        client.start_stream(callback=lambda result, error: responses.put((result, error)))
        expected = {}
        for seed in range(8):
            inputs, a, b = add_sub_inputs(grpcclient, batch=1 + seed, seed=400 + seed)
            expected["s%d" % seed] = (a, b)
            client.async_stream_infer("simple", inputs, request_id="s%d" % seed)
        # An error in the stream comes back as a response with an error, the stream goes on.
        inputs, _, _ = add_sub_inputs(grpcclient)
        client.async_stream_infer("no_such_model", inputs, request_id="bad")
        in0, in1, sa, sb = string_operands(seed=5)
        client.async_stream_infer("simple_string", infer_inputs(grpcclient, {"INPUT0": in0, "INPUT1": in1}),
                                  request_id="str")
        seen, errors = set(), []
        for _ in range(len(expected) + 2):
            result, error = responses.get(timeout=30)
            if error is not None:
                errors.append(error)
                continue
            rid = result.get_response().id
            seen.add(rid)
            if rid == "str":
                check_string_add_sub(result, sa, sb)
            else:
                check_add_sub(result, *expected[rid])
        assert seen == set(expected) | {"str"}
        assert len(errors) == 1
        assert "Request for unknown model: 'no_such_model' is not found" in errors[0].message()
        client.stop_stream()
    finally:
        client.close()


def test_streaming_sequence(server):
    # simple_sequence computes OUTPUT = INPUT * READY + START (see its config.pbtxt).
    responses = queue.Queue()
    client = grpcclient.InferenceServerClient(server.grpc_url)
    try:
        client.start_stream(callback=lambda result, error: responses.put((result, error)))
        values = [3, 9, 27, -1]
        for i, v in enumerate(values):
            client.async_stream_infer(
                "simple_sequence", infer_inputs(grpcclient, {"INPUT": np.array([[v]], dtype=np.int32)}),
                request_id=str(i), sequence_id=77, sequence_start=(i == 0), sequence_end=(i == len(values) - 1))
        got = {}
        for _ in values:
            result, error = responses.get(timeout=30)
            assert error is None, error
            got[int(result.get_response().id)] = int(result.as_numpy("OUTPUT")[0][0])
        assert [got[i] for i in range(len(values))] == [values[0] + 1] + values[1:]
        client.stop_stream()
    finally:
        client.close()


def test_sequence_grpc(grpc_client):
    values = [2, 4, 6]
    got = []
    for i, v in enumerate(values):
        result = grpc_client.infer(
            "simple_sequence", infer_inputs(grpcclient, {"INPUT": np.array([[v]], dtype=np.int32)}),
            sequence_id=5150, sequence_start=(i == 0), sequence_end=(i == len(values) - 1))
        got.append(int(result.as_numpy("OUTPUT")[0][0]))
    assert got == [3, 4, 6]


def test_raw_typed_contents(server):
    # Inputs in InferTensorContents (int_contents) instead of raw_input_contents.
    a, b = add_sub_operands(seed=35)
    request = service_pb2.ModelInferRequest(model_name="simple", id="typed")
    for name, arr in (("INPUT0", a), ("INPUT1", b)):
        tensor = request.inputs.add(name=name, datatype="INT32", shape=list(arr.shape))
        tensor.contents.int_contents.extend(arr.flatten().tolist())
    with grpc.insecure_channel(server.grpc_url) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        response = stub.ModelInfer(request, timeout=30)
        assert response.id == "typed"
        outputs = {o.name: i for i, o in enumerate(response.outputs)}
        out0 = np.frombuffer(response.raw_output_contents[outputs["OUTPUT0"]], np.int32).reshape(1, 16)
        out1 = np.frombuffer(response.raw_output_contents[outputs["OUTPUT1"]], np.int32).reshape(1, 16)
        np.testing.assert_array_equal(out0, a + b)
        np.testing.assert_array_equal(out1, a - b)

        # Raw contents too, by hand.
        request = service_pb2.ModelInferRequest(model_name="simple_fp32", model_version="1")
        x = np.linspace(-1, 1, 16, dtype=np.float32).reshape(1, 16)
        for name in ("INPUT0", "INPUT1"):
            request.inputs.add(name=name, datatype="FP32", shape=[1, 16])
            request.raw_input_contents.append(x.tobytes())
        response = stub.ModelInfer(request, timeout=30)
        outputs = {o.name: i for i, o in enumerate(response.outputs)}
        np.testing.assert_array_equal(
            np.frombuffer(response.raw_output_contents[outputs["OUTPUT0"]], np.float32), (x + x).ravel())
        np.testing.assert_array_equal(
            np.frombuffer(response.raw_output_contents[outputs["OUTPUT1"]], np.float32), np.zeros(16, np.float32))


def test_raw_health_and_metadata(server):
    with grpc.insecure_channel(server.grpc_url) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        assert stub.ServerLive(service_pb2.ServerLiveRequest(), timeout=10).live
        assert stub.ServerReady(service_pb2.ServerReadyRequest(), timeout=10).ready
        assert stub.ModelReady(service_pb2.ModelReadyRequest(name="simple"), timeout=10).ready
        assert not stub.ModelReady(service_pb2.ModelReadyRequest(name="simple", version="9"), timeout=10).ready
        with pytest.raises(grpc.RpcError) as err:
            stub.ModelMetadata(service_pb2.ModelMetadataRequest(name="nope"), timeout=10)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        assert err.value.details() == "Request for unknown model: 'nope' is not found"


def test_aio_client(server):
    async def run():
        async with aiogrpcclient.InferenceServerClient(server.grpc_url) as client:
            assert await client.is_server_live()
            assert await client.is_server_ready()
            assert await client.is_model_ready("simple")
            assert (await client.get_server_metadata()).name == "triton"
            md = await client.get_model_metadata("simple")
            assert list(md.inputs[0].shape) == [-1, 16]
            jobs = []
            for seed in range(16):
                inputs, a, b = add_sub_inputs(aiogrpcclient, batch=1 + seed % 8, seed=500 + seed)
                jobs.append((client.infer("simple", inputs, request_id="g%d" % seed), a, b, seed))
            results = await asyncio.gather(*(job for job, _, _, _ in jobs))
            for result, (_, a, b, seed) in zip(results, jobs):
                check_add_sub(result, a, b)
                assert result.get_response().id == "g%d" % seed

            expected = {}

            async def requests():
                for seed in range(6):
                    inputs, a, b = add_sub_inputs(aiogrpcclient, batch=2, seed=600 + seed)
                    expected["r%d" % seed] = (a, b)
                    yield {"model_name": "simple", "inputs": inputs, "request_id": "r%d" % seed}

            seen = []
            async for result, error in client.stream_infer(requests()):
                assert error is None, error
                rid = result.get_response().id
                check_add_sub(result, *expected[rid])
                seen.append(rid)
            assert sorted(seen) == sorted(expected)

    asyncio.run(run())
