"""Model repository extension: index, load/unload (explicit mode, with config and file overrides),
and repository polling. Every server here runs on a copy of the example models in tmp_path."""

import base64
import json
import os
import shutil

import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

import harness
from tensors import add_sub_inputs, check_add_sub

pytestmark = pytest.mark.timeout(120)

make_models = harness.make_models


def index_of(client):
    return {m["name"]: m for m in client.get_model_repository_index()}


def simple_config_json(name="simple", max_batch_size=8):
    return json.dumps({
        "name": name,
        "platform": "onnxruntime_onnx",
        "max_batch_size": max_batch_size,
        "input": [{"name": n, "data_type": "TYPE_INT32", "dims": [16]} for n in ("INPUT0", "INPUT1")],
        "output": [{"name": n, "data_type": "TYPE_INT32", "dims": [16]} for n in ("OUTPUT0", "OUTPUT1")],
    })


def swapped_model_bytes(name="simple"):
    """An ONNX model with simple's interface computing OUTPUT0 = INPUT0 - INPUT1, OUTPUT1 = INPUT0 + INPUT1."""
    return make_models.build_add_sub(name, make_models.TensorProto.INT32, swap=True).SerializeToString()


@pytest.fixture
def explicit(start_server, repo):
    path = repo("simple", "simple_fp32", "simple_string")
    before = harness.snapshot(path)
    srv = start_server(path, "--model-control-mode", "explicit", "--load-model", "simple")
    client = srv.http_client()
    yield srv, client, path
    assert harness.snapshot(path) == before, "the server modified the user's model repository"


def test_explicit_startup_index(explicit):
    srv, client, _ = explicit
    index = index_of(client)
    assert set(index) == {"simple", "simple_fp32", "simple_string"}
    assert index["simple"] == {"name": "simple", "version": "1", "state": "READY"}
    # Models never loaded are listed by name only (core: ModelIndex name_only).
    assert index["simple_fp32"] == {"name": "simple_fp32"}
    assert client.is_model_ready("simple")
    assert not client.is_model_ready("simple_fp32")
    with pytest.raises(InferenceServerException) as err:
        client.infer("simple_fp32", add_sub_inputs(httpclient, np.float32)[0])
    assert err.value.message() == "Request for unknown model: 'simple_fp32' is not found"
    # Only ready models with {"ready": true}.
    status, body = harness.request_json(srv.http_port, "POST", "/v2/repository/index", {"ready": True})
    assert status == 200
    assert [m["name"] for m in body] == ["simple"]
    # gRPC sees the same index.
    g = srv.grpc_client().get_model_repository_index()
    assert {m.name: m.state for m in g.models} == {"simple": "READY", "simple_fp32": "", "simple_string": ""}


def test_explicit_load_and_unload(explicit):
    srv, client, _ = explicit
    client.load_model("simple_fp32")
    assert client.is_model_ready("simple_fp32")
    assert index_of(client)["simple_fp32"] == {"name": "simple_fp32", "version": "1", "state": "READY"}
    inputs, a, b = add_sub_inputs(httpclient, np.float32, batch=2)
    check_add_sub(client.infer("simple_fp32", inputs), a, b)

    client.unload_model("simple_fp32")
    harness.wait_until(
        lambda: index_of(client)["simple_fp32"] == {"name": "simple_fp32", "version": "1",
                                                     "state": "UNAVAILABLE", "reason": "unloaded"},
        message="simple_fp32 to be UNAVAILABLE/unloaded in the index")
    assert not client.is_model_ready("simple_fp32")
    with pytest.raises(InferenceServerException):
        client.infer("simple_fp32", inputs)
    # The other model is untouched, and the server stays ready (unloaded models don't count).
    inputs, a, b = add_sub_inputs(httpclient)
    check_add_sub(client.infer("simple", inputs), a, b)
    assert client.is_server_ready()

    # Load again over gRPC.
    grpc = srv.grpc_client()
    grpc.load_model("simple_fp32")
    assert grpc.is_model_ready("simple_fp32")
    grpc.unload_model("simple_fp32")
    harness.wait_until(lambda: not grpc.is_model_ready("simple_fp32"), message="gRPC unload")


def test_explicit_load_unknown_model(explicit):
    _, client, _ = explicit
    with pytest.raises(InferenceServerException) as err:
        client.load_model("no_such_model")
    assert err.value.message() == "failed to load 'no_such_model', failed to poll from model repository"
    assert err.value.status() == "500"


def test_explicit_load_with_config_override(explicit):
    srv, client, path = explicit
    client.load_model("simple", config=simple_config_json(max_batch_size=2))
    assert client.get_model_config("simple")["max_batch_size"] == 2
    inputs, a, b = add_sub_inputs(httpclient, batch=2)
    check_add_sub(client.infer("simple", inputs), a, b)
    with pytest.raises(InferenceServerException) as err:
        client.infer("simple", add_sub_inputs(httpclient, batch=3)[0])
    assert err.value.message() == "[request id: <id_unknown>] inference request batch-size must be <= 2 for 'simple'"
    # Loading without override goes back to the repository's config.pbtxt.
    client.load_model("simple")
    assert client.get_model_config("simple")["max_batch_size"] == 8


def test_explicit_load_with_file_override(explicit):
    srv, client, path = explicit
    client.load_model("simple", config=simple_config_json(), files={"file:1/model.onnx": swapped_model_bytes()})
    inputs, a, b = add_sub_inputs(httpclient, batch=3, seed=4)
    result = client.infer("simple", inputs)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a - b)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), a + b)
    # A model that only exists through the override.
    client.load_model("only_in_memory", config=simple_config_json("only_in_memory"),
                      files={"file:1/model.onnx": swapped_model_bytes("only_in_memory")})
    result = client.infer("only_in_memory", inputs)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a - b)
    assert not os.path.exists(os.path.join(path, "only_in_memory"))
    # Back to the files on disk.
    client.load_model("simple")
    check_add_sub(client.infer("simple", inputs), a, b)


def test_explicit_file_override_requires_config(explicit):
    # The override is refused while polling the model ("Load parameter 'config' must be specified for
    # model file override" goes to the log); the client gets the generic poll failure, INTERNAL -> 500
    # (checked against tritonserver 2.51).
    srv, client, _ = explicit
    payload = {"parameters": {"file:1/model.onnx": base64.b64encode(swapped_model_bytes()).decode()}}
    status, body = harness.request_json(srv.http_port, "POST", "/v2/repository/models/simple/load", payload)
    assert (status, body) == (500, {"error": "failed to load 'simple', failed to poll from model repository"})
    inputs, a, b = add_sub_inputs(httpclient)
    check_add_sub(client.infer("simple", inputs), a, b)


def test_explicit_load_broken_model(start_server, repo, tmp_path):
    path = repo("simple")
    harness.write_broken_model(path, "broken")
    srv = start_server(path, "--model-control-mode=explicit", "--load-model=simple")
    client = srv.http_client()
    with pytest.raises(InferenceServerException) as err:
        client.load_model("broken")
    assert err.value.message().startswith("load failed for model 'broken': version 1 is at UNAVAILABLE state: ")
    assert err.value.status() == "400"
    entry = index_of(client)["broken"]
    assert entry["state"] == "UNAVAILABLE" and entry["version"] == "1" and entry["reason"], entry
    inputs, a, b = add_sub_inputs(httpclient)
    check_add_sub(client.infer("simple", inputs), a, b)


def test_load_not_allowed_without_explicit_mode(server, http_client):
    with pytest.raises(InferenceServerException) as err:
        http_client.load_model("simple")
    assert err.value.message() == "explicit model load / unload is not allowed if polling is enabled"
    assert err.value.status() == "503"


def _add_model_atomically(repository, name, staging):
    """Copy an example model next to the repository, then rename it in, so a poll never sees half a model."""
    src = harness.copy_model(name, staging)
    os.rename(src, os.path.join(repository, name))


def test_poll_mode(start_server, repo, tmp_path):
    path = repo("simple")
    staging = str(tmp_path / "staging")
    os.makedirs(staging)
    srv = start_server(path, "--model-control-mode", "poll", "--repository-poll-secs", "1")
    client = srv.http_client()
    assert set(index_of(client)) == {"simple"}

    # A new model folder appears.
    _add_model_atomically(path, "simple_fp32", staging)
    harness.wait_until(lambda: index_of(client).get("simple_fp32", {}).get("state") == "READY",
                       timeout=15, message="simple_fp32 to be loaded by polling")
    inputs, a, b = add_sub_inputs(httpclient, np.float32)
    check_add_sub(client.infer("simple_fp32", inputs), a, b)

    # A config changes.
    config_path = os.path.join(path, "simple", "config.pbtxt")
    with open(config_path) as f:
        text = f.read()
    with open(config_path + ".tmp", "w") as f:
        f.write(text.replace("max_batch_size: 8", "max_batch_size: 4"))
    os.replace(config_path + ".tmp", config_path)
    harness.wait_until(lambda: client.get_model_config("simple")["max_batch_size"] == 4,
                       timeout=15, message="simple to be reloaded with max_batch_size 4")
    with pytest.raises(InferenceServerException) as err:
        client.infer("simple", add_sub_inputs(httpclient, batch=5)[0])
    assert err.value.message() == "[request id: <id_unknown>] inference request batch-size must be <= 4 for 'simple'"
    inputs, a, b = add_sub_inputs(httpclient, batch=4)
    check_add_sub(client.infer("simple", inputs), a, b)

    # A model folder goes away.
    shutil.rmtree(os.path.join(path, "simple_fp32"))
    harness.wait_until(lambda: not client.is_model_ready("simple_fp32"), timeout=15,
                       message="simple_fp32 to be unloaded by polling")
    assert "simple_fp32" not in index_of(client)
    assert client.is_model_ready("simple")

    # Loading by hand is refused while polling.
    with pytest.raises(InferenceServerException) as err:
        client.load_model("simple")
    assert err.value.message() == "explicit model load / unload is not allowed if polling is enabled"


def test_poll_mode_ignores_half_written_models(start_server, repo):
    # A folder without config or version appears: the server keeps serving the others.
    path = repo("simple")
    srv = start_server(path, "--model-control-mode=poll", "--repository-poll-secs=1")
    client = srv.http_client()
    os.makedirs(os.path.join(path, "empty_model"))
    harness.wait_until(lambda: "empty_model" in index_of(client), timeout=15, message="empty_model in the index")
    assert not client.is_model_ready("empty_model")
    inputs, a, b = add_sub_inputs(httpclient)
    check_add_sub(client.infer("simple", inputs), a, b)


def test_index_shows_failed_model(start_server, repo):
    # A model that fails to load, with --exit-on-error=false: others load, the index says why.
    path = repo("simple")
    harness.write_broken_model(path, "bad_config")
    srv = start_server(path, "--exit-on-error=false", wait_for="live")
    client = srv.http_client()
    harness.wait_until(lambda: client.is_model_ready("simple"), message="simple to load")
    entry = index_of(client)["bad_config"]
    assert entry["state"] == "UNAVAILABLE" and entry.get("reason"), entry
    assert not client.is_model_ready("bad_config")
    # Triton's strict readiness: a model that failed to load makes the server not ready.
    assert not client.is_server_ready()
    inputs, a, b = add_sub_inputs(httpclient)
    check_add_sub(client.infer("simple", inputs), a, b)
