"""Triton's system (and, where CUDA is there, CUDA) shared memory extensions, through tritonclient.http,
tritonclient.grpc and tritonclient.utils.shared_memory: inputs and outputs in regions, status and
unregister, Triton's error texts, and misuse that must leave the server serving."""

import json
import os
import sys
import threading
from multiprocessing import shared_memory as mpshm

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
import tritonclient.utils.shared_memory as shm
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException, serialize_byte_tensor

import harness
from tensors import add_sub_inputs, add_sub_operands, check_add_sub

pytestmark = pytest.mark.timeout(120)

ALLOW = "--allow-client-shm=true"
I32 = 16 * 4  # bytes of one [1, 16] INT32 tensor
U64_MAX = 2**64 - 1


@pytest.fixture(scope="module")
def shm_server():
    srv = harness.Server(harness.EXAMPLE_REPOSITORY, [ALLOW])
    srv.start()
    try:
        yield srv
    finally:
        if srv.proc.poll() is None:
            srv.stop(expect_code=0)
        else:
            srv.kill()


@pytest.fixture(autouse=True)
def still_serving(shm_server):
    """After every test: the server is up and answers plain requests on both protocols."""
    yield
    for module, url in ((httpclient, shm_server.http_url), (grpcclient, shm_server.grpc_url)):
        client = module.InferenceServerClient(url)
        try:
            inputs, a, b = add_sub_inputs(module, batch=2, seed=98)
            check_add_sub(client.infer("simple", inputs), a, b)
            client.unregister_system_shared_memory()
        finally:
            client.close()
    assert shm_server.proc.poll() is None, "server exited\n" + shm_server.describe()


@pytest.fixture(params=["http", "grpc"])
def client(request, shm_server):
    """(tritonclient module, client) for each protocol."""
    if request.param == "http":
        yield httpclient, shm_server.http_client()
    else:
        yield grpcclient, shm_server.grpc_client()
    shm_server.close_clients()


def key(tag):
    return "/nereid_%d_%s" % (os.getpid(), tag)


@pytest.fixture
def region():
    """region(tag, size) -> a new system shared memory region (client side), destroyed at the end."""
    made = []

    def make(tag, size):
        handle = shm.create_shared_memory_region(tag, key(tag), size)
        made.append(handle)
        return handle

    yield make
    for handle in made:
        if handle._shm_key in shm.mapped_shared_memory_regions():
            shm.destroy_shared_memory_region(handle)


def error_of(call, *args, **kwargs):
    with pytest.raises(InferenceServerException) as err:
        call(*args, **kwargs)
    return err.value.message()


def shm_inputs(module, names_shapes, region_name, offsets, dtype="INT32", sizes=None):
    result = []
    for i, ((name, shape), offset) in enumerate(zip(names_shapes, offsets)):
        inp = module.InferInput(name, list(shape), dtype)
        inp.set_shared_memory(region_name, sizes[i] if sizes else int(np.prod(shape)) * 4, offset=offset)
        result.append(inp)
    return result


def shm_outputs(module, names, region_name, offsets, size=I32):
    result = []
    for name, offset in zip(names, offsets):
        out = module.InferRequestedOutput(name)
        out.set_shared_memory(region_name, size, offset=offset)
        result.append(out)
    return result


def add_sub_in_regions(module, client, region, tag, seed):
    """Runs `simple` with both inputs and both outputs in regions; returns the output region and a, b."""
    a, b = add_sub_operands(seed=seed)
    inputs = region(tag + "_in", 2 * I32)
    outputs = region(tag + "_out", 2 * I32)
    shm.set_shared_memory_region(inputs, [a, b])
    client.register_system_shared_memory(tag + "_in", key(tag + "_in"), 2 * I32)
    client.register_system_shared_memory(tag + "_out", key(tag + "_out"), 2 * I32)
    result = client.infer(
        "simple",
        shm_inputs(module, [("INPUT0", (1, 16)), ("INPUT1", (1, 16))], tag + "_in", [0, I32]),
        outputs=shm_outputs(module, ["OUTPUT0", "OUTPUT1"], tag + "_out", [0, I32]),
    )
    return result, outputs, a, b


# -- data in and out -----------------------------------------------------------------------------
def test_inputs_and_outputs_in_regions(client, region):
    module, c = client
    result, outputs, a, b = add_sub_in_regions(module, c, region, "io", seed=1)
    np.testing.assert_array_equal(shm.get_contents_as_numpy(outputs, np.int32, [1, 16]), a + b)
    np.testing.assert_array_equal(shm.get_contents_as_numpy(outputs, np.int32, [1, 16], offset=I32), a - b)
    # As in Triton, outputs written to shared memory carry no data in the response.
    if module is httpclient:
        out = result.get_output("OUTPUT0")
        assert out == {"name": "OUTPUT0", "datatype": "INT32", "shape": [1, 16]}
    else:
        response = result.get_response()
        assert [o.name for o in response.outputs] == ["OUTPUT0", "OUTPUT1"]
        assert list(response.raw_output_contents) == [b"", b""]


def test_some_tensors_in_regions_and_some_not(client, region):
    module, c = client
    a, b = add_sub_operands(seed=2)
    handle = region("mixed", 4 * I32)
    shm.set_shared_memory_region(handle, [a], offset=3 * I32)
    c.register_system_shared_memory("mixed", key("mixed"), 4 * I32)
    in0 = shm_inputs(module, [("INPUT0", (1, 16))], "mixed", [3 * I32])[0]
    in1 = module.InferInput("INPUT1", [1, 16], "INT32")
    in1.set_data_from_numpy(b)
    out0 = shm_outputs(module, ["OUTPUT0"], "mixed", [I32])[0]
    result = c.infer("simple", [in0, in1], outputs=[out0, module.InferRequestedOutput("OUTPUT1")])
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), a - b)
    np.testing.assert_array_equal(shm.get_contents_as_numpy(handle, np.int32, [1, 16], offset=I32), a + b)


def test_registered_offset_is_added_to_the_tensor_offset(client, region):
    module, c = client
    a, b = add_sub_operands(seed=3)
    handle = region("offset", 1000)
    shm.set_shared_memory_region(handle, [a, b], offset=100 + 8)
    # The region starts 100 bytes into the object; the tensors 8 bytes into the region.
    c.register_system_shared_memory("offset", key("offset"), 2 * I32 + 8 + 2 * I32, offset=100)
    result = c.infer(
        "simple",
        shm_inputs(module, [("INPUT0", (1, 16)), ("INPUT1", (1, 16))], "offset", [8, 8 + I32]),
        outputs=shm_outputs(module, ["OUTPUT0"], "offset", [8 + 2 * I32]),
    )
    assert result.get_output("OUTPUT0") is not None
    got = shm.get_contents_as_numpy(handle, np.int32, [1, 16], offset=100 + 8 + 2 * I32)
    np.testing.assert_array_equal(got, a + b)


def test_bytes_tensors(client, region):
    module, c = client
    a = np.array([[str(i * 7 - 50).encode() for i in range(16)]], dtype=np.object_)
    b = np.array([[str(i).encode() for i in range(16)]], dtype=np.object_)
    sa, sb = serialize_byte_tensor(a), serialize_byte_tensor(b)
    na, nb = len(sa.item()), len(sb.item())
    handle = region("bytes", na + nb)
    shm.set_shared_memory_region(handle, [sa, sb])
    out = region("bytes_out", 1024)
    c.register_system_shared_memory("bytes", key("bytes"), na + nb)
    c.register_system_shared_memory("bytes_out", key("bytes_out"), 1024)
    inputs = shm_inputs(module, [("INPUT0", (1, 16)), ("INPUT1", (1, 16))], "bytes", [0, na],
                        dtype="BYTES", sizes=[na, nb])
    c.infer("simple_string", inputs, outputs=shm_outputs(module, ["OUTPUT0"], "bytes_out", [0], size=1024))
    got = shm.get_contents_as_numpy(out, np.object_, [1, 16])
    assert [int(v) for v in got[0]] == [i * 7 - 50 + i for i in range(16)]


def test_large_identity_round_trip(client, region):
    module, c = client
    x = np.random.default_rng(4).standard_normal((1, 1 << 20)).astype(np.float32)
    handle = region("large", 2 * x.nbytes)
    shm.set_shared_memory_region(handle, [x])
    c.register_system_shared_memory("large", key("large"), 2 * x.nbytes)
    inp = shm_inputs(module, [("INPUT0", x.shape)], "large", [0], dtype="FP32")[0]
    c.infer("simple_identity", [inp], outputs=shm_outputs(module, ["OUTPUT0"], "large", [x.nbytes], size=x.nbytes))
    np.testing.assert_array_equal(shm.get_contents_as_numpy(handle, np.float32, x.shape, offset=x.nbytes), x)


# -- status and unregister -----------------------------------------------------------------------
def status_rows(module, c, name=""):
    rows = c.get_system_shared_memory_status(region_name=name)
    if module is grpcclient:
        rows = [{"name": r.name, "key": r.key, "offset": r.offset, "byte_size": r.byte_size}
                for r in rows.regions.values()]
    return sorted(rows, key=lambda r: r["name"])


def test_status_and_unregister(client, region):
    module, c = client
    region("status", 128)
    c.register_system_shared_memory("s1", key("status"), 64)
    c.register_system_shared_memory("s2", key("status"), 32, offset=64)
    assert status_rows(module, c) == [
        {"name": "s1", "key": key("status"), "offset": 0, "byte_size": 64},
        {"name": "s2", "key": key("status"), "offset": 64, "byte_size": 32},
    ]
    assert status_rows(module, c, "s2") == [{"name": "s2", "key": key("status"), "offset": 64, "byte_size": 32}]
    c.unregister_system_shared_memory("s1")
    assert [r["name"] for r in status_rows(module, c)] == ["s2"]
    # Unregistering a name nobody registered is not an error, as in Triton.
    c.unregister_system_shared_memory("nobody")
    c.register_system_shared_memory("s1", key("status"), 8)
    c.unregister_system_shared_memory()
    assert status_rows(module, c) == []
    assert error_of(c.get_system_shared_memory_status, region_name="s1") == \
        "Unable to find system shared memory region: 's1'"
    cuda = c.get_cuda_shared_memory_status()
    assert (cuda if module is httpclient else list(cuda.regions)) == []


def test_http_status_bodies_and_routes(shm_server, region):
    region("routes", 64)
    port = shm_server.http_port
    status, _ = harness.request_json(port, "POST", "/v2/systemsharedmemory/region/r/register",
                                     {"key": key("routes"), "byte_size": 64})
    assert status == 200
    assert harness.request_json(port, "GET", "/v2/systemsharedmemory/status") == \
        (200, [{"name": "r", "key": key("routes"), "offset": 0, "byte_size": 64}])
    assert harness.request_json(port, "GET", "/v2/cudasharedmemory/status") == (200, [])
    assert harness.request_json(port, "POST", "/v2/systemsharedmemory/status")[0] == 405
    assert harness.request_json(port, "GET", "/v2/systemsharedmemory/region/r/register")[0] == 405
    assert harness.request_json(port, "GET", "/v2/systemsharedmemory/region/r/bogus")[0] == 404
    assert harness.request_json(port, "POST", "/v2/systemsharedmemory/region/r/unregister")[0] == 200
    assert harness.request_json(port, "GET", "/v2/systemsharedmemory/status") == (200, [])


# -- Triton's error texts ------------------------------------------------------------------------
def test_registration_errors(client, region):
    module, c = client
    region("reg", 64)
    c.register_system_shared_memory("dup", key("reg"), 64)
    assert error_of(c.register_system_shared_memory, "dup", key("reg"), 64) == \
        "shared memory region 'dup' already in manager"
    assert error_of(c.register_system_shared_memory, "big", key("reg"), 65) == \
        "failed to register shared memory region 'big': invalid args"
    assert error_of(c.register_system_shared_memory, "far", key("reg"), 1, offset=64) == \
        "failed to register shared memory region 'far': invalid args"
    message = error_of(c.register_system_shared_memory, "gone", key("missing"), 8)
    assert message.startswith("Unable to open shared memory region: '%s' (tried '" % key("missing")), message
    assert error_of(c.register_system_shared_memory, "slash", "/", 8) == \
        "cannot register shared memory region 'slash' - invalid shm key '/'"
    assert error_of(c.register_system_shared_memory, "py", "/triton_python_backend_shm_region_x", 8) == (
        "cannot register shared memory region 'py' with key '/triton_python_backend_shm_region_x' as the key "
        "contains the reserved prefix 'triton_python_backend_shm_region_'")


def test_infer_errors(client, region):
    module, c = client
    handle = region("errs", 2 * I32)
    shm.set_shared_memory_region(handle, list(add_sub_operands(seed=5)))
    c.register_system_shared_memory("errs", key("errs"), 2 * I32)
    names = [("INPUT0", (1, 16)), ("INPUT1", (1, 16))]

    def infer_error(inputs, outputs=None):
        return error_of(c.infer, "simple", inputs, outputs=outputs)

    assert infer_error(shm_inputs(module, names, "nope", [0, I32])) == "Unable to find shared memory region: 'nope'"
    assert infer_error(shm_inputs(module, names, "errs", [0, 2 * I32])) == \
        "Invalid offset for shared memory region: 'errs'"
    assert infer_error(shm_inputs(module, names, "errs", [0, I32 + 4])) == \
        "Invalid offset + byte size for shared memory region: 'errs'"
    assert infer_error(shm_inputs(module, names, "errs", [0, I32], sizes=[I32, I32 - 4])) == \
        "[request id: <id_unknown>] input byte size mismatch for input 'INPUT1' for model 'simple'. Expected 64, got 60"
    inputs = shm_inputs(module, names, "errs", [0, I32])
    small = shm_outputs(module, ["OUTPUT0"], "errs", [0], size=I32 // 2)
    assert infer_error(inputs, small) == ("shared memory size specified with the request for output 'OUTPUT0' "
                                          "(32 bytes) should be at least 64 bytes to hold the results")
    # The client refuses to set both shared memory and classification on an output; the wire can.
    out = module.InferRequestedOutput("OUTPUT0", class_count=2)
    if module is grpcclient:
        out._output.parameters["shared_memory_region"].string_param = "errs"
        out._output.parameters["shared_memory_byte_size"].int64_param = I32
        text = "output can't set both 'shared_memory_region' and 'classification'"
    else:
        out._parameters.update(shared_memory_region="errs", shared_memory_byte_size=I32)
        text = "Output can't set both 'shared_memory_region' and 'classification'"
    assert infer_error(inputs, [out]) == text


def test_client_shared_memory_is_off_by_default(start_server, region):
    region("off", 64)
    srv = start_server(harness.EXAMPLE_REPOSITORY)
    text = "Client shared memory is disabled. Start the server with '--allow-client-shm=true' to enable."
    for c in (srv.http_client(), srv.grpc_client()):
        assert error_of(c.register_system_shared_memory, "r", key("off"), 64) == text
        assert error_of(c.unregister_system_shared_memory) == text
        assert error_of(c.unregister_cuda_shared_memory, "r") == text
        assert error_of(c.register_cuda_shared_memory, "r", b"AAAA", 0, 64) == text
        # Status stays open, as in Triton.
        status = c.get_system_shared_memory_status()
        assert len(status if isinstance(status, list) else status.regions) == 0
    srv.close_clients()


def test_cuda_without_cuda_says_so(shm_server, client):
    module, c = client
    extensions = c.get_server_metadata()
    extensions = extensions["extensions"] if module is httpclient else list(extensions.extensions)
    assert "system_shared_memory" in extensions
    if "cuda_shared_memory" in extensions:
        pytest.skip("the CUDA runtime loads here: see test_cuda_shared_memory")
    message = error_of(c.register_cuda_shared_memory, "g", "AAAA", 0, 64)
    assert message.startswith("failed to register CUDA shared memory region: 'g', GPUs not supported"), message


# -- misuse that must not take the server down --------------------------------------------------
def raw_infer(shm_server, inputs, outputs=None):
    body = {"inputs": inputs}
    if outputs:
        body["outputs"] = outputs
    return harness.request_json(shm_server.http_port, "POST", "/v2/models/simple/infer", body)


def shm_input(name, region_name, **params):
    return {"name": name, "datatype": "INT32", "shape": [1, 16],
            "parameters": dict({"shared_memory_region": region_name}, **params)}


@pytest.mark.parametrize("params, status, message", [
    ({"shared_memory_offset": 1 << 40, "shared_memory_byte_size": I32}, 400,
     "Invalid offset for shared memory region: 'atk'"),
    ({"shared_memory_offset": U64_MAX, "shared_memory_byte_size": I32}, 400,
     "Invalid offset for shared memory region: 'atk'"),
    ({"shared_memory_offset": 4, "shared_memory_byte_size": U64_MAX}, 400,
     "Integer overflow detected: byte_size (18446744073709551615) + offset (4) exceeds maximum value "
     "(18446744073709551615) for region 'atk'"),
    ({"shared_memory_offset": 0, "shared_memory_byte_size": 1 << 62}, 400,
     "Invalid offset + byte size for shared memory region: 'atk'"),
    ({"shared_memory_byte_size": -64}, 500,
     "Unable to parse 'shared_memory_byte_size': attempt to access JSON non-unsigned-integer as unsigned-integer"),
    ({"shared_memory_offset": -1, "shared_memory_byte_size": I32}, 500,
     "Unable to parse 'shared_memory_offset': attempt to access JSON non-unsigned-integer as unsigned-integer"),
    ({"shared_memory_byte_size": 1.5}, 500,
     "Unable to parse 'shared_memory_byte_size': attempt to access JSON non-unsigned-integer as unsigned-integer"),
], ids=["offset_past_end", "offset_max", "size_overflows", "size_huge", "size_negative", "offset_negative",
        "size_not_integer"])
def test_http_attacks_on_input_bounds(shm_server, region, params, status, message):
    region("atk", 2 * I32)
    assert harness.request_json(shm_server.http_port, "POST", "/v2/systemsharedmemory/region/atk/register",
                                {"key": key("atk"), "byte_size": 2 * I32})[0] == 200
    fine = shm_input("INPUT1", "atk", shared_memory_offset=I32, shared_memory_byte_size=I32)
    assert raw_infer(shm_server, [shm_input("INPUT0", "atk", **params), fine]) == (status, {"error": message})
    # The same bounds hold for outputs.
    inputs = [shm_input("INPUT0", "atk", shared_memory_byte_size=I32), fine]
    output = {"name": "OUTPUT0", "parameters": dict({"shared_memory_region": "atk"}, **params)}
    assert raw_infer(shm_server, inputs, [output]) == (status, {"error": message})


@pytest.mark.parametrize("body, status, message", [
    ({"key": "/k", "byte_size": -1}, 500, "attempt to access JSON non-unsigned-integer as unsigned-integer"),
    ({"key": "/k", "offset": -8, "byte_size": 8}, 500, "attempt to access JSON non-unsigned-integer as unsigned-integer"),
    ({"byte_size": 8}, 400, "Shared memory register request has no 'key' field"),
    ({"key": "/k"}, 400, "Shared memory register request has no 'byte_size' field"),
    ({"key": 5, "byte_size": 8}, 500, "attempt to access JSON non-string as string"),
], ids=["size_negative", "offset_negative", "no_key", "no_size", "key_not_string"])
def test_http_attacks_on_registration(shm_server, body, status, message):
    got = harness.request_json(shm_server.http_port, "POST", "/v2/systemsharedmemory/region/r/register", body)
    assert got == (status, {"error": message})


def test_registration_sizes_that_overflow(client, region):
    module, c = client
    region("ovf", 64)
    for offset, size in ((U64_MAX, 2), (8, U64_MAX), (1 << 63, 1 << 63)):
        assert error_of(c.register_system_shared_memory, "ovf", key("ovf"), size, offset=offset) == \
            "failed to register shared memory region 'ovf': invalid args"


def test_grpc_negative_and_overflowing_parameters(shm_server, region):
    region("gatk", 2 * I32)
    stub = service_pb2_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(shm_server.grpc_url))
    stub.SystemSharedMemoryRegister(service_pb2.SystemSharedMemoryRegisterRequest(
        name="gatk", key=key("gatk"), byte_size=2 * I32))

    def infer(offset, size, missing_size=False):
        request = service_pb2.ModelInferRequest(model_name="simple")
        for name, off in (("INPUT0", offset), ("INPUT1", I32)):
            tensor = request.inputs.add(name=name, datatype="INT32", shape=[1, 16])
            tensor.parameters["shared_memory_region"].string_param = "gatk"
            tensor.parameters["shared_memory_offset"].int64_param = off
            if not (missing_size and name == "INPUT0"):
                tensor.parameters["shared_memory_byte_size"].int64_param = size if name == "INPUT0" else I32
        with pytest.raises(grpc.RpcError) as err:
            stub.ModelInfer(request)
        return err.value.code(), err.value.details()

    assert infer(-1, I32) == (grpc.StatusCode.INVALID_ARGUMENT, "Invalid offset for shared memory region: 'gatk'")
    assert infer(8, -8) == (grpc.StatusCode.INVALID_ARGUMENT,
                            "Integer overflow detected: byte_size (18446744073709551608) + offset (8) exceeds "
                            "maximum value (18446744073709551615) for region 'gatk'")
    assert infer(0, 2**63 - 1) == (grpc.StatusCode.INVALID_ARGUMENT,
                                   "Invalid offset + byte size for shared memory region: 'gatk'")
    assert infer(0, 0, missing_size=True) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "'shared_memory_byte_size' must be specified along with 'shared_memory_region' parameter for tensor 'INPUT0'")


def test_unregister_during_inference(shm_server, client, region):
    """Requests that hold a region keep it mapped; unregistering only frees the name."""
    module, c = client
    url = shm_server.http_url if module is httpclient else shm_server.grpc_url
    x = np.arange(1 << 16, dtype=np.float32).reshape(1, -1)
    handle = region("busy", x.nbytes)
    shm.set_shared_memory_region(handle, [x])
    errors, wrong = [], []
    stop = threading.Event()

    def worker():
        local = module.InferenceServerClient(url)
        try:
            while not stop.is_set():
                inp = shm_inputs(module, [("INPUT0", x.shape)], "busy", [0], dtype="FP32")[0]
                out = module.InferRequestedOutput("OUTPUT0")
                try:
                    if not np.array_equal(local.infer("simple_identity", [inp], outputs=[out]).as_numpy("OUTPUT0"), x):
                        wrong.append(1)
                except InferenceServerException as e:
                    errors.append(e.message())
        finally:
            local.close()

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        for _ in range(50):
            c.register_system_shared_memory("busy", key("busy"), x.nbytes)
            c.unregister_system_shared_memory("busy")
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not wrong
    assert set(errors) <= {"Unable to find shared memory region: 'busy'"}


def test_region_unlinked_by_the_client_while_registered(client, region):
    module, c = client
    result, outputs, a, b = add_sub_in_regions(module, c, region, "unlinked", seed=6)
    shm.destroy_shared_memory_region(outputs)  # closes and unlinks the client's object
    with pytest.raises(FileNotFoundError):
        mpshm.SharedMemory(key("unlinked_out"))
    # The server keeps the object it mapped: requests still run, and the name can be reused.
    result = c.infer(
        "simple",
        shm_inputs(module, [("INPUT0", (1, 16)), ("INPUT1", (1, 16))], "unlinked_in", [0, I32]),
        outputs=shm_outputs(module, ["OUTPUT0"], "unlinked_out", [0]),
    )
    assert result.get_output("OUTPUT0") is not None
    c.unregister_system_shared_memory("unlinked_out")
    assert "Unable to open shared memory region" in error_of(
        c.register_system_shared_memory, "unlinked_out", key("unlinked_out"), I32)


@pytest.mark.skipif(sys.platform == "darwin", reason="macOS sizes a shared memory object once")
def test_object_truncated_after_registration(client, region):
    module, c = client
    a, b = add_sub_operands(seed=7)
    handle = region("trunc", 2 * I32)
    shm.set_shared_memory_region(handle, [a, b])
    c.register_system_shared_memory("trunc", key("trunc"), 2 * I32)
    c.register_system_shared_memory("trunc_out", key("trunc"), I32, offset=I32)
    os.ftruncate(handle._mpsm_handle._fd, I32)  # the client cuts the object under the server
    inputs = shm_inputs(module, [("INPUT0", (1, 16)), ("INPUT1", (1, 16))], "trunc", [0, I32])
    message = error_of(c.infer, "simple", inputs)
    assert message == ("shared memory region 'trunc' is no longer usable: its object '%s' was truncated below "
                       "128 bytes" % key("trunc"))
    inputs = [module.InferInput(n, [1, 16], "INT32") for n in ("INPUT0", "INPUT1")]
    for inp, v in zip(inputs, (a, b)):
        inp.set_data_from_numpy(v)
    assert "is no longer usable" in error_of(c.infer, "simple", inputs,
                                             outputs=shm_outputs(module, ["OUTPUT0"], "trunc_out", [0]))


@pytest.mark.skipif(sys.platform == "darwin", reason="macOS sizes a shared memory object once")
def test_object_truncated_during_inference(shm_server, region):
    """The client shrinks the object while requests read it in place: errors, never a crash."""
    x = np.ones((1, 4 << 20), dtype=np.float32)
    handle = region("shrinking", x.nbytes)
    shm.set_shared_memory_region(handle, [x])
    c = shm_server.grpc_client()
    c.register_system_shared_memory("shrinking", key("shrinking"), x.nbytes)
    outcomes = []

    def worker():
        local = grpcclient.InferenceServerClient(shm_server.grpc_url)
        try:
            for _ in range(20):
                inp = shm_inputs(grpcclient, [("INPUT0", x.shape)], "shrinking", [0], dtype="FP32")[0]
                try:
                    local.infer("simple_identity", [inp])
                    outcomes.append("ok")
                except InferenceServerException as e:
                    outcomes.append(e.message())
        finally:
            local.close()

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    harness.wait_until(lambda: len(outcomes) >= 2, message="requests before the truncation")
    os.ftruncate(handle._mpsm_handle._fd, 4096)
    for t in threads:
        t.join()
    assert outcomes[0] == "ok" and outcomes[-1] != "ok"
    for outcome in outcomes:
        assert outcome == "ok" or "no longer usable" in outcome, outcome
    shm_server.close_clients()


# -- CUDA shared memory, where the CUDA runtime and a GPU are there ---------------------------------
def test_cuda_shared_memory(client):
    module, c = client
    try:
        import tritonclient.utils.cuda_shared_memory as cudashm
    except (ImportError, RuntimeError) as e:
        pytest.skip("no CUDA shared memory utilities: %s" % e)
    meta = c.get_server_metadata()
    if "cuda_shared_memory" not in (meta["extensions"] if module is httpclient else list(meta.extensions)):
        pytest.skip("the server does not load the CUDA runtime here")
    a, b = add_sub_operands(seed=8)
    inputs = cudashm.create_shared_memory_region("cuda_in", 2 * I32, 0)
    outputs = cudashm.create_shared_memory_region("cuda_out", 2 * I32, 0)
    try:
        cudashm.set_shared_memory_region(inputs, [a, b])
        c.register_cuda_shared_memory("cuda_in", cudashm.get_raw_handle(inputs), 0, 2 * I32)
        c.register_cuda_shared_memory("cuda_out", cudashm.get_raw_handle(outputs), 0, 2 * I32)
        c.infer("simple", shm_inputs(module, [("INPUT0", (1, 16)), ("INPUT1", (1, 16))], "cuda_in", [0, I32]),
                outputs=shm_outputs(module, ["OUTPUT0", "OUTPUT1"], "cuda_out", [0, I32]))
        np.testing.assert_array_equal(cudashm.get_contents_as_numpy(outputs, np.int32, [2, 16])[0], (a + b)[0])
        np.testing.assert_array_equal(cudashm.get_contents_as_numpy(outputs, np.int32, [2, 16])[1], (a - b)[0])
        status = c.get_cuda_shared_memory_status()
        names = sorted(r["name"] for r in status) if module is httpclient else sorted(status.regions)
        assert names == ["cuda_in", "cuda_out"]
        assert error_of(c.register_cuda_shared_memory, "cuda_in", cudashm.get_raw_handle(inputs), 0, 8) == \
            "shared memory region 'cuda_in' already in manager"
        assert error_of(c.get_system_shared_memory_status, region_name="cuda_in") == \
            "The region named 'cuda_in' is registered as CUDA shared memory, not system shared memory"
        c.unregister_cuda_shared_memory()
        assert error_of(c.register_cuda_shared_memory, "big", cudashm.get_raw_handle(inputs), 0, 1 << 30) == \
            "failed to register shared memory region 'big': invalid args"
        assert error_of(c.register_cuda_shared_memory, "junk", "QUFB" * 21 + "QQ==", 0, 8) == \
            "failed to register shared memory region: invalid args"
    finally:
        c.unregister_cuda_shared_memory()
        cudashm.destroy_shared_memory_region(inputs)
        cudashm.destroy_shared_memory_region(outputs)
