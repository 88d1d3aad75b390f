"""Inference statistics (HTTP and gRPC statistics extension) and Prometheus metrics after a known
number of inferences, on a fresh server so the counts are exact."""

import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

import harness
from tensors import add_sub_inputs, check_add_sub, infer_inputs

pytestmark = pytest.mark.timeout(90)

BATCHES = [1, 2, 3, 1, 1, 8]  # one request each, sent one after another


def run_requests(srv):
    client = srv.http_client()
    grpc = srv.grpc_client()
    for i, batch in enumerate(BATCHES):
        # Alternate the protocols: statistics are per model, whatever the frontend.
        module, c = (httpclient, client) if i % 2 == 0 else (grpcclient, grpc)
        inputs, a, b = add_sub_inputs(module, batch=batch, seed=i)
        check_add_sub(c.infer("simple", inputs), a, b)
    # A request the server rejects is not a success (and not an execution).
    with pytest.raises(InferenceServerException):
        client.infer("simple", infer_inputs(httpclient, {"INPUT0": add_sub_inputs(httpclient)[1]}))
    return client, grpc


@pytest.fixture
def counted(start_server, repo):
    srv = start_server(repo("simple", "simple_fp32"))
    client, grpc = run_requests(srv)
    return srv, client, grpc


def test_http_statistics(counted):
    srv, client, _ = counted
    stats = client.get_inference_statistics("simple")
    assert len(stats["model_stats"]) == 1
    s = stats["model_stats"][0]
    assert s["name"] == "simple"
    assert s["version"] == "1"
    assert s["inference_count"] == sum(BATCHES)
    assert s["execution_count"] == len(BATCHES)
    assert s["last_inference"] > 0
    inf = s["inference_stats"]
    assert inf["success"]["count"] == len(BATCHES)
    for phase in ("success", "queue", "compute_input", "compute_infer", "compute_output"):
        assert inf[phase]["count"] == len(BATCHES), phase
        assert inf[phase]["ns"] > 0, phase
    assert inf["success"]["ns"] >= inf["compute_infer"]["ns"]
    per_batch = {b["batch_size"]: b["compute_infer"]["count"] for b in s["batch_stats"]}
    expected = {size: BATCHES.count(size) for size in set(BATCHES)}
    assert per_batch == expected
    for b in s["batch_stats"]:
        assert b["compute_infer"]["ns"] > 0


def test_statistics_by_version_and_for_all_models(counted):
    _, client, _ = counted
    assert client.get_inference_statistics("simple", "1")["model_stats"][0]["inference_count"] == sum(BATCHES)
    everything = {(s["name"], s["version"]): s for s in client.get_inference_statistics()["model_stats"]}
    assert everything[("simple", "1")]["execution_count"] == len(BATCHES)
    untouched = everything[("simple_fp32", "1")]
    assert untouched["inference_count"] == 0
    assert untouched["execution_count"] == 0
    assert untouched["last_inference"] == 0


def test_grpc_statistics(counted):
    _, _, grpc = counted
    stats = grpc.get_inference_statistics("simple").model_stats
    assert len(stats) == 1
    s = stats[0]
    assert (s.name, s.version) == ("simple", "1")
    assert s.inference_count == sum(BATCHES)
    assert s.execution_count == len(BATCHES)
    assert s.inference_stats.success.count == len(BATCHES)
    assert s.inference_stats.compute_infer.ns > 0
    assert s.inference_stats.queue.count == len(BATCHES)


def test_statistics_unknown_model(counted):
    srv, client, _ = counted
    # core tritonserver.cc TRITONSERVER_ServerModelStatistics: INVALID_ARG -> 400.
    with pytest.raises(InferenceServerException) as err:
        client.get_inference_statistics("nope")
    assert (err.value.message(), err.value.status()) == ("requested model 'nope' is not available", "400")
    with pytest.raises(InferenceServerException) as err:
        client.get_inference_statistics("simple", "2")
    assert err.value.message() == "requested model version is not available for model 'simple'"


def test_prometheus_metrics(counted):
    srv, _, _ = counted
    status, headers, body = harness.request(srv.metrics_port, "GET", "/metrics")
    assert status == 200
    assert headers.get("content-type", "").startswith("text/plain")
    text = body.decode()
    samples = harness.parse_metrics(text)
    m = lambda name, model="simple": harness.metric(samples, name, model=model, version="1")
    assert m("nv_inference_request_success") == len(BATCHES)
    assert m("nv_inference_count") == sum(BATCHES)
    assert m("nv_inference_exec_count") == len(BATCHES)
    for name in ("nv_inference_request_duration_us", "nv_inference_compute_infer_duration_us",
                 "nv_inference_compute_input_duration_us", "nv_inference_compute_output_duration_us"):
        assert m(name) is not None and m(name) > 0, name
    assert m("nv_inference_queue_duration_us") is not None
    assert m("nv_inference_request_success", "simple_fp32") == 0
    assert m("nv_inference_count", "simple_fp32") == 0
    # The exact line Triton prints for the success counter.
    assert 'nv_inference_request_success{model="simple",version="1"} %d' % len(BATCHES) in text
    # HELP/TYPE lines as Prometheus expects.
    assert "# TYPE nv_inference_request_success counter" in text
    assert "# HELP nv_inference_request_success " in text


def test_metrics_follow_new_requests(counted):
    srv, client, _ = counted
    inputs, a, b = add_sub_inputs(httpclient, batch=4)
    check_add_sub(client.infer("simple", inputs), a, b)

    def current():
        _, _, body = harness.request(srv.metrics_port, "GET", "/metrics")
        samples = harness.parse_metrics(body.decode())
        return (harness.metric(samples, "nv_inference_request_success", model="simple", version="1"),
                harness.metric(samples, "nv_inference_count", model="simple", version="1"))

    harness.wait_until(lambda: current() == (len(BATCHES) + 1, sum(BATCHES) + 4), timeout=5,
                       message="metrics to count the extra request")
