"""Ensembles through tritonclient: steps as a data-flow graph (independent steps in parallel),
batch dimensions between batching and plain models, a failing step, Triton's load-time errors,
loading composing models with the ensemble, and statistics for the ensemble and its models."""

import os
import re
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

import harness
import scheduling_models as sm
from tensors import infer_inputs

pytestmark = pytest.mark.timeout(120)


def step(model, inputs, outputs):
    maps = ["input_map { key: \"%s\" value: \"%s\" }" % kv for kv in inputs.items()]
    maps += ["output_map { key: \"%s\" value: \"%s\" }" % kv for kv in outputs.items()]
    return '{ model_name: "%s" model_version: -1 %s }' % (model, " ".join(maps))


def ensemble_config(name, inputs, outputs, steps, max_batch_size=8, dtype="TYPE_INT32", dims="[ 16 ]"):
    tensor = lambda n: '{ name: "%s" data_type: %s dims: %s }' % (n, dtype, dims)
    return """name: "%s"
platform: "ensemble"
max_batch_size: %d
input [ %s ]
output [ %s ]
ensemble_scheduling { step [ %s ] }
""" % (name, max_batch_size, ", ".join(map(tensor, inputs)), ", ".join(map(tensor, outputs)), ", ".join(steps))


def write_ensemble(repo, name, config):
    folder = harness.write_model(repo, name, config, None)
    os.makedirs(os.path.join(folder, "1"), exist_ok=True)


# sum, diff = simple(IN0, IN1); OUT_2A, OUT_2B = simple(sum, diff) (2a, 2b);
# and, independent of those, SUM2, NEG_DIFF = simple(IN1, IN0).
ADD_SUB_STEPS = [
    step("simple", {"INPUT0": "IN0", "INPUT1": "IN1"}, {"OUTPUT0": "sum", "OUTPUT1": "diff"}),
    step("simple", {"INPUT0": "sum", "INPUT1": "diff"}, {"OUTPUT0": "OUT_2A", "OUTPUT1": "OUT_2B"}),
    step("simple", {"INPUT0": "IN1", "INPUT1": "IN0"}, {"OUTPUT0": "SUM2", "OUTPUT1": "NEG_DIFF"}),
]
ADD_SUB_OUTPUTS = ["OUT_2A", "OUT_2B", "SUM2", "NEG_DIFF"]


def add_sub_repository(tmp_path):
    repo = tmp_path / "models"
    harness.make_repository(repo, ["simple"])
    write_ensemble(repo, "ens", ensemble_config("ens", ["IN0", "IN1"], ADD_SUB_OUTPUTS, ADD_SUB_STEPS))
    plain = ensemble_config("ens_plain", ["IN0", "IN1"], ADD_SUB_OUTPUTS, ADD_SUB_STEPS, max_batch_size=0)
    write_ensemble(repo, "ens_plain", plain)
    return str(repo)


def operands(batch):
    rng = np.random.default_rng(batch)
    shape = (batch, 16) if batch else (16,)
    return rng.integers(-50, 50, size=shape).astype(np.int32), rng.integers(-50, 50, size=shape).astype(np.int32)


def test_ensemble_runs_its_steps(start_server, tmp_path):
    srv = start_server(add_sub_repository(tmp_path))
    assert srv.log().count("successfully loaded 'simple' version 1") == 1, "composing models load once"
    for module, client in ((httpclient, srv.http_client()), (grpcclient, srv.grpc_client())):
        for batch in (1, 3):
            a, b = operands(batch)
            result = client.infer("ens", infer_inputs(module, {"IN0": a, "IN1": b}))
            expected = {"OUT_2A": 2 * a, "OUT_2B": 2 * b, "SUM2": a + b, "NEG_DIFF": b - a}
            for name, value in expected.items():
                np.testing.assert_array_equal(result.as_numpy(name), value)
        # Only what is asked for, in the order asked.
        a, b = operands(2)
        outputs = [module.InferRequestedOutput("NEG_DIFF"), module.InferRequestedOutput("OUT_2A")]
        result = client.infer("ens", infer_inputs(module, {"IN0": a, "IN1": b}), outputs=outputs)
        np.testing.assert_array_equal(result.as_numpy("NEG_DIFF"), b - a)
        assert result.as_numpy("OUT_2B") is None
    # A plain (non-batching) ensemble over the batching model: the batch dimension is added
    # for the step and taken off again.
    a, b = operands(0)
    result = srv.http_client().infer("ens_plain", infer_inputs(httpclient, {"IN0": a, "IN1": b}))
    assert result.as_numpy("OUT_2A").shape == (16,)
    np.testing.assert_array_equal(result.as_numpy("OUT_2A"), 2 * a)
    metadata = srv.http_client().get_model_metadata("ens")
    assert metadata["platform"] == "ensemble"


def test_ensemble_statistics(start_server, tmp_path):
    srv = start_server(add_sub_repository(tmp_path))
    batches = [1, 2, 3, 1, 4, 1, 2, 2]

    def one(batch):
        client = httpclient.InferenceServerClient(srv.http_url)
        a, b = operands(batch)
        client.infer("ens", infer_inputs(httpclient, {"IN0": a, "IN1": b}))
        client.close()

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(one, batches))
    client = srv.http_client()
    ens = client.get_inference_statistics("ens")["model_stats"][0]
    assert (ens["inference_count"], ens["execution_count"]) == (sum(batches), len(batches))
    inf = ens["inference_stats"]
    assert inf["success"]["count"] == len(batches)
    assert inf["compute_infer"]["count"] == len(batches) and inf["compute_infer"]["ns"] > 0
    simple = client.get_inference_statistics("simple")["model_stats"][0]
    assert simple["inference_stats"]["success"]["count"] == 3 * len(batches)
    assert simple["inference_count"] == 3 * sum(batches)
    samples = harness.parse_metrics(harness.request(srv.metrics_port, "GET", "/metrics")[2].decode())
    assert harness.metric(samples, "nv_inference_request_success", model="ens") == len(batches)
    assert harness.metric(samples, "nv_inference_count", model="simple") == 3 * sum(batches)


def test_independent_steps_run_in_parallel(start_server, tmp_path):
    # Two branches from the input on one model whose batcher waits up to 3 s for a batch of 2:
    # submitted together, they run at once as one batch; one after the other, each would wait.
    repo = tmp_path / "models"
    harness.make_repository(repo, ["simple_fp32"])
    batching = "dynamic_batching { preferred_batch_size: [ 2 ] max_queue_delay_microseconds: 3000000 }"
    harness.write_model(repo, "branch", sm.probe_config("branch", scheduling=batching, dims="[ 16 ]"),
                        sm.probe("branch", dims=(16,)))
    steps = [
        step("branch", {"INPUT": "IN"}, {"OUTPUT": "a"}),
        step("branch", {"INPUT": "IN"}, {"OUTPUT": "b"}),
        step("simple_fp32", {"INPUT0": "a", "INPUT1": "b"}, {"OUTPUT0": "SUM", "OUTPUT1": "DIFF"}),
    ]
    write_ensemble(repo, "fork", ensemble_config("fork", ["IN"], ["SUM", "DIFF"], steps, dtype="TYPE_FP32"))
    srv = start_server(str(repo))
    client = srv.http_client()
    x = np.arange(16, dtype=np.float32).reshape(1, 16)
    start = time.monotonic()
    result = client.infer("fork", infer_inputs(httpclient, {"IN": x}))
    assert time.monotonic() - start < 2.5
    np.testing.assert_array_equal(result.as_numpy("SUM"), 2 * x)
    branch = client.get_inference_statistics("branch")["model_stats"][0]
    assert {b["batch_size"]: b["compute_infer"]["count"] for b in branch["batch_stats"]} == {2: 1}


def test_failing_step_fails_the_request(start_server, tmp_path):
    from test_scheduling import gather_model

    repo = tmp_path / "models"
    harness.write_model(repo, "gather", """name: "gather" backend: "onnxruntime" max_batch_size: 8
input [ { name: "INDEX" data_type: TYPE_INT64 dims: [ 1 ] } ]
output [ { name: "VALUE" data_type: TYPE_INT64 dims: [ 1 ] } ]""", gather_model("gather"))
    steps = [step("gather", {"INDEX": "IN"}, {"VALUE": "mid"}), step("gather", {"INDEX": "mid"}, {"VALUE": "OUT"})]
    write_ensemble(repo, "twice", ensemble_config("twice", ["IN"], ["OUT"], steps, dtype="TYPE_INT64", dims="[ 1 ]"))
    srv = start_server(str(repo))
    client = srv.http_client()
    ok = client.infer("twice", infer_inputs(httpclient, {"IN": np.array([[0]], np.int64)}))
    assert ok.as_numpy("OUT")[0, 0] == 0
    # 10 * 5 = 50 is out of the table in the second step.
    with pytest.raises(InferenceServerException) as err:
        client.infer("twice", infer_inputs(httpclient, {"IN": np.array([[5]], np.int64)}))
    assert err.value.message().startswith("in ensemble 'twice', "), err.value.message()
    ens = client.get_inference_statistics("twice")["model_stats"][0]["inference_stats"]
    assert (ens["success"]["count"], ens["fail"]["count"]) == (1, 1)


@pytest.fixture
def explicit(start_server, tmp_path):
    srv = start_server(add_sub_repository(tmp_path), "--model-control-mode", "explicit")
    return srv, srv.http_client(), tmp_path / "models"


def test_loading_an_ensemble_loads_its_models(explicit):
    srv, client, _ = explicit
    assert client.get_model_repository_index() and not client.is_model_ready("simple")
    client.load_model("ens")
    assert client.is_model_ready("ens") and client.is_model_ready("simple")
    a, b = operands(1)
    np.testing.assert_array_equal(client.infer("ens", infer_inputs(httpclient, {"IN0": a, "IN1": b}))
                                  .as_numpy("SUM2"), a + b)
    # Without a composing model, the ensemble goes too.
    client.unload_model("simple")
    assert not client.is_model_ready("ens")
    client.load_model("ens")
    assert client.is_model_ready("simple")


def load_error(client, repo, name, config):
    write_ensemble(repo, name, config)
    with pytest.raises(InferenceServerException) as err:
        client.load_model(name)
    assert err.value.status() == "400"
    message = err.value.message()
    prefix = "load failed for model '%s': " % name
    assert message.startswith(prefix), message
    return message[len(prefix):].strip()


def test_ensemble_config_errors(explicit):
    srv, client, repo = explicit
    both = {"INPUT0": "IN0", "INPUT1": "IN1"}
    outs = {"OUTPUT0": "OUT0", "OUTPUT1": "OUT1"}
    config = lambda name, steps, **kw: ensemble_config(name, ["IN0", "IN1"], ["OUT0", "OUT1"], steps, **kw)
    assert load_error(client, repo, "unknown", config("unknown", [step("nope", both, outs)])) == (
        "ensemble unknown contains models that are not available or ambiguous: nope")
    assert load_error(client, repo, "unmapped", ensemble_config(
        "unmapped", ["IN0"], ["OUT0", "OUT1"], [step("simple", {"INPUT0": "IN0"}, outs)])) == (
        "in ensemble unmapped, input INPUT1 in model simple is not mapped to any ensemble tensors")
    assert load_error(client, repo, "wrong_input", config(
        "wrong_input", [step("simple", {"INPUT0": "IN0", "INPUT1": "IN1", "NOPE": "IN0"}, outs)])) == (
        "in ensemble wrong_input, ensemble tensor IN0 is mapping to non-existing input NOPE in model simple")
    assert load_error(client, repo, "wrong_type", config("wrong_type", [step("simple", both, outs)],
                                                         dtype="TYPE_FP32")) == (
        "in ensemble wrong_type, ensemble tensor IN0: inconsistent data type: TYPE_FP32 is inferred from model "
        "wrong_type while TYPE_INT32 is inferred from model simple")
    assert load_error(client, repo, "too_big", config("too_big", [step("simple", both, outs)],
                                                      max_batch_size=16)) == (
        "ensemble too_big allows maximum batch size 16, but it contains model simple which only allows maximum "
        "batch size to be 8")
    # Steps in a cycle never get their inputs: caught by the config check.
    loop = [step("simple", {"INPUT0": "IN0", "INPUT1": "b"}, {"OUTPUT0": "a", "OUTPUT1": "OUT1"}),
            step("simple", {"INPUT0": "a", "INPUT1": "IN1"}, {"OUTPUT0": "b", "OUTPUT1": "OUT0"})]
    assert "is not written" in load_error(client, repo, "steps_loop", config("steps_loop", loop))
    # Ensembles that use each other.
    write_ensemble(repo, "e2", config("e2", [step("e1", {"IN0": "IN0", "IN1": "IN1"}, {"OUT0": "OUT0", "OUT1": "OUT1"})]))
    assert load_error(client, repo, "e1", config("e1", [step("e2", {"IN0": "IN0", "IN1": "IN1"},
                                                             {"OUT0": "OUT0", "OUT1": "OUT1"})])) == (
        "circular dependency between ensembles: e1 -> ... -> e2 -> e1")
    index = {m["name"]: m for m in client.get_model_repository_index()}
    assert index["unknown"]["state"] == "UNAVAILABLE"
    assert re.search("not available or ambiguous", index["unknown"]["reason"])
