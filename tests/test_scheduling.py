"""Instances, the dynamic batcher, priorities and queue policies, through tritonclient.

The models (tests/scheduling_models.py) report the batch size each request ran in (BATCH) and
its row in that batch (SLOT); a slow variant loops ITERS times, so a request can hold an
instance for a known while. Timings leave wide margins: the machine may be busy.
"""

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from fractions import Fraction

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

import harness
import scheduling_models as sm
from tensors import infer_inputs

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def per_second():
    """Loop iterations of the slow probe per second on this machine."""
    return sm.slow_iterations(1.0)


def serve(start_server, tmp_path, *models):
    """A server on a repository of (name, config text, onnx model) triples."""
    repo = tmp_path / "models"
    for name, config, model in models:
        harness.write_model(repo, name, config, model)
    return start_server(str(repo))


def probe_inputs(module, rows=1, width=1, iters=None, value=0.0):
    arrays = {"INPUT": np.full((rows, width), value, np.float32)}
    if iters is not None:
        arrays["ITERS"] = np.full((rows, 1), iters, np.int64)
    return infer_inputs(module, arrays)


def infer(srv, model, rows=1, width=1, iters=None, value=0.0, **kwargs):
    """One HTTP request on its own client (tritonclient clients are not shared by threads)."""
    client = httpclient.InferenceServerClient(srv.http_url, network_timeout=60.0)
    try:
        return client.infer(model, probe_inputs(httpclient, rows, width, iters, value), **kwargs)
    finally:
        client.close()


def in_parallel(calls, spacing=0.0):
    """Runs the calls on threads, started `spacing` seconds apart. Returns (result or exception,
    completion time) per call, in call order."""
    def timed(call):
        try:
            result = call()
        except InferenceServerException as e:
            result = e
        return result, time.monotonic()

    with ThreadPoolExecutor(len(calls)) as pool:
        futures = []
        for call in calls:
            futures.append(pool.submit(timed, call))
            time.sleep(spacing)
        return [f.result() for f in futures]


def stats_of(srv, model):
    client = srv.http_client()
    return client.get_inference_statistics(model)["model_stats"][0]


def batch_sizes(results):
    return sorted(int(r.as_numpy("BATCH")[0, 0]) for r, _ in results)


def test_instances_execute_concurrently(start_server, tmp_path, per_second):
    # While one instance holds a long request, a short one runs at once on the other.
    config = sm.probe_config("slow", max_batch_size=8, instances=2, iters_input=True)
    srv = serve(start_server, tmp_path, ("slow", config, sm.probe("slow", iters_input=True)))
    (long_result, long_done), (short_result, short_done) = in_parallel(
        [lambda: infer(srv, "slow", iters=2 * per_second), lambda: infer(srv, "slow", iters=1)], spacing=0.3)
    assert short_done < long_done - 0.7
    assert long_result.as_numpy("BATCH")[0, 0] == 1 and short_result.as_numpy("BATCH")[0, 0] == 1
    s = stats_of(srv, "slow")
    assert (s["execution_count"], s["inference_count"]) == (2, 2)


def test_preferred_batch_size_goes_at_once_and_the_delay_sends_the_rest(start_server, tmp_path):
    batching = "dynamic_batching { preferred_batch_size: [ 4 ] max_queue_delay_microseconds: 3000000 }"
    srv = serve(start_server, tmp_path, ("probe", sm.probe_config("probe", scheduling=batching), sm.probe("probe")))
    start = time.monotonic()
    results = in_parallel([lambda: infer(srv, "probe")] * 4)
    assert batch_sizes(results) == [4] * 4
    assert max(t for _, t in results) - start < 2.5, "a preferred batch does not wait for the delay"
    start = time.monotonic()
    results = in_parallel([lambda: infer(srv, "probe")] * 3)
    assert batch_sizes(results) == [3] * 3
    assert min(t for _, t in results) - start > 2.5, "a smaller batch waits for the queue delay"
    # Rows of a batch are the requests, in queue order: each request gets its own values back.
    results = in_parallel([lambda v=v: infer(srv, "probe", value=v) for v in range(4)], spacing=0.05)
    assert [r.as_numpy("OUTPUT")[0, 0] for r, _ in results] == [0, 1, 2, 3]
    assert [r.as_numpy("SLOT")[0, 0] for r, _ in results] == [0, 1, 2, 3]


def test_batches_fill_up_to_max_batch_size(start_server, tmp_path):
    batching = "dynamic_batching { max_queue_delay_microseconds: 1500000 }"
    srv = serve(start_server, tmp_path, ("probe", sm.probe_config("probe", scheduling=batching), sm.probe("probe")))
    # 10 requests: 8 fill the batch (max_batch_size, the preferred size by default); the
    # other 2 wait for the delay.
    results = in_parallel([lambda: infer(srv, "probe")] * 10)
    assert batch_sizes(results) == [2] * 2 + [8] * 8
    # Requests of several rows: 3 + 5 make 8.
    results = in_parallel([lambda: infer(srv, "probe", rows=3), lambda: infer(srv, "probe", rows=5)])
    assert [r.as_numpy("BATCH").tolist() for r, _ in results] == [[[8]] * 3, [[8]] * 5]
    s = stats_of(srv, "probe")
    assert {b["batch_size"]: b["compute_infer"]["count"] for b in s["batch_stats"]} == {2: 1, 8: 2}
    assert (s["execution_count"], s["inference_count"]) == (3, 18)


def test_different_shapes_batch_separately_unless_ragged(start_server, tmp_path):
    batching = "dynamic_batching { max_queue_delay_microseconds: 1000000 }"
    strict = sm.probe_config("strict", scheduling=batching)
    ragged = sm.probe_config("ragged", scheduling=batching, extra="allow_ragged_batch: true")
    srv = serve(start_server, tmp_path, ("strict", strict, sm.probe("strict")), ("ragged", ragged, sm.probe("ragged")))
    for model in ("strict", "ragged"):
        results = in_parallel([lambda w=w: infer(srv, model, width=w) for w in (2, 2, 3)], spacing=0.05)
        for (r, _), width in zip(results, (2, 2, 3)):
            assert r.as_numpy("OUTPUT").shape == (1, width)
    strict_stats, ragged_stats = stats_of(srv, "strict"), stats_of(srv, "ragged")
    assert {b["batch_size"]: b["compute_infer"]["count"] for b in strict_stats["batch_stats"]} == {2: 1, 1: 1}
    assert {b["batch_size"]: b["compute_infer"]["count"] for b in ragged_stats["batch_stats"]} == {3: 1}


def slow_config(name, scheduling, instances=1):
    return sm.probe_config(name, max_batch_size=1, scheduling=scheduling, instances=instances, iters_input=True)


def test_higher_priority_runs_first(start_server, tmp_path, per_second):
    batching = "dynamic_batching { priority_levels: 2 default_priority_level: 2 }"
    srv = serve(start_server, tmp_path, ("slow", slow_config("slow", batching), sm.probe("slow", iters_input=True)))
    # Each queued request takes a fifth of a second, so completion times are far apart.
    step = per_second // 5
    results = in_parallel([
        lambda: infer(srv, "slow", iters=per_second),  # holds the instance
        lambda: infer(srv, "slow", iters=step, value=2.0),  # default level: 2
        lambda: infer(srv, "slow", iters=step, value=1.0, priority=1),
        lambda: infer(srv, "slow", iters=step, value=3.0, priority=7),  # out of range: the default
    ], spacing=0.2)
    done = {r.as_numpy("OUTPUT")[0, 0]: t for r, t in results[1:]}
    assert done[1.0] < done[2.0] < done[3.0]


def test_full_queue_is_unavailable(start_server, tmp_path, per_second):
    batching = "dynamic_batching { default_queue_policy { max_queue_size: 2 } }"
    srv = serve(start_server, tmp_path, ("slow", slow_config("slow", batching), sm.probe("slow", iters_input=True)))
    blocker = threading.Thread(target=infer, args=(srv, "slow"), kwargs={"iters": 2 * per_second})
    blocker.start()
    time.sleep(0.3)
    queued = [threading.Thread(target=infer, args=(srv, "slow"), kwargs={"iters": 1}) for _ in range(2)]
    for t in queued:
        t.start()
    time.sleep(0.3)
    with pytest.raises(InferenceServerException) as err:
        infer(srv, "slow", iters=1, request_id="r9")
    assert err.value.message() == "[request id: r9] Exceeds maximum queue size"
    assert err.value.status() == "503"
    grpc = srv.grpc_client()
    with pytest.raises(InferenceServerException) as err:
        grpc.infer("slow", probe_inputs(grpcclient, iters=1))
    assert err.value.message() == "[request id: <id_unknown>] Exceeds maximum queue size"
    assert err.value.status() == "StatusCode.UNAVAILABLE"
    for t in [blocker] + queued:
        t.join()
    assert stats_of(srv, "slow")["inference_stats"]["success"]["count"] == 3


def test_timeout_rejects_queued_request(start_server, tmp_path, per_second):
    batching = "dynamic_batching { default_queue_policy { timeout_action: REJECT default_timeout_microseconds: 300000 } }"
    srv = serve(start_server, tmp_path, ("slow", slow_config("slow", batching), sm.probe("slow", iters_input=True)))
    results = in_parallel([lambda: infer(srv, "slow", iters=per_second), lambda: infer(srv, "slow", iters=1)],
                          spacing=0.2)
    assert not isinstance(results[0][0], InferenceServerException)
    err = results[1][0]
    assert isinstance(err, InferenceServerException)
    assert (err.message(), err.status()) == ("Request timeout expired", "503")
    s = stats_of(srv, "slow")
    assert (s["inference_stats"]["success"]["count"], s["inference_stats"]["fail"]["count"]) == (1, 1)
    samples = harness.parse_metrics(harness.request(srv.metrics_port, "GET", "/metrics")[2].decode())
    assert harness.metric(samples, "nv_inference_request_failure", model="slow", reason="REJECTED") == 1


def test_timeout_override_and_delay(start_server, tmp_path, per_second):
    # DELAY: a request whose (overridden, shorter) timeout passed runs after the unexpired ones.
    batching = """dynamic_batching { default_queue_policy {
        timeout_action: DELAY default_timeout_microseconds: 20000000 allow_timeout_override: true } }"""
    srv = serve(start_server, tmp_path, ("slow", slow_config("slow", batching), sm.probe("slow", iters_input=True)))
    step = per_second // 5
    results = in_parallel([
        lambda: infer(srv, "slow", iters=per_second),
        lambda: infer(srv, "slow", iters=step, value=1.0, timeout=100000),
        lambda: infer(srv, "slow", iters=step, value=2.0),
    ], spacing=0.25)
    done = {r.as_numpy("OUTPUT")[0, 0]: t for r, t in results[1:]}
    assert done[2.0] < done[1.0]


def test_low_priority_completes_under_high_priority_load(start_server, tmp_path, per_second):
    batching = "dynamic_batching { priority_levels: 2 default_priority_level: 1 }"
    config = sm.probe_config("slow", max_batch_size=4, scheduling=batching, iters_input=True)
    srv = serve(start_server, tmp_path, ("slow", config, sm.probe("slow", iters_input=True)))
    stop = threading.Event()

    def high_load():
        client = httpclient.InferenceServerClient(srv.http_url)
        while not stop.is_set():
            client.infer("slow", probe_inputs(httpclient, iters=per_second // 20))
        client.close()

    load = [threading.Thread(target=high_load) for _ in range(3)]
    for t in load:
        t.start()
    try:
        time.sleep(0.5)
        start = time.monotonic()
        result = infer(srv, "slow", iters=1, value=5.0, priority=2)
        assert result.as_numpy("OUTPUT")[0, 0] == 5.0
        assert time.monotonic() - start < 5.0
    finally:
        stop.set()
        for t in load:
            t.join()


@pytest.mark.parametrize("preserve", [True, False])
def test_preserve_ordering(start_server, tmp_path, per_second, preserve):
    batching = "dynamic_batching { preserve_ordering: %s }" % ("true" if preserve else "false")
    config = slow_config("slow", batching, instances=2)
    srv = serve(start_server, tmp_path, ("slow", config, sm.probe("slow", iters_input=True)))
    (_, slow_done), (_, fast_done) = in_parallel(
        [lambda: infer(srv, "slow", iters=per_second), lambda: infer(srv, "slow", iters=1)], spacing=0.2)
    if preserve:
        assert fast_done > slow_done - 0.05, "the fast response waited for the slow one"
    else:
        assert fast_done < slow_done - 0.5


def gather_model(name):
    """VALUE = 10 * INDEX; an INDEX out of [0, 10) makes ONNX Runtime fail the whole batch."""
    from onnx import TensorProto, helper

    table = helper.make_tensor("table", TensorProto.INT64, [10], [10 * i for i in range(10)])
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "INDEX"], ["VALUE"])], name,
        [sm._tensor("INDEX", TensorProto.INT64, ["batch", 1])], [sm._tensor("VALUE", TensorProto.INT64, ["batch", 1])],
        initializer=[table])
    return sm.make_models._finish(graph)


def test_failure_does_not_fail_batch_mates(start_server, tmp_path):
    config = """name: "gather" backend: "onnxruntime" max_batch_size: 8
dynamic_batching { max_queue_delay_microseconds: 1000000 }
input [ { name: "INDEX" data_type: TYPE_INT64 dims: [ 1 ] } ]
output [ { name: "VALUE" data_type: TYPE_INT64 dims: [ 1 ] } ]"""
    srv = serve(start_server, tmp_path, ("gather", config, gather_model("gather")))

    def gather(index):
        client = httpclient.InferenceServerClient(srv.http_url)
        try:
            return client.infer("gather", infer_inputs(httpclient, {"INDEX": np.array([[index]], np.int64)}))
        finally:
            client.close()

    results = in_parallel([lambda i=i: gather(i) for i in (3, 99, 5)], spacing=0.05)
    assert results[0][0].as_numpy("VALUE")[0, 0] == 30
    assert isinstance(results[1][0], InferenceServerException)
    assert results[2][0].as_numpy("VALUE")[0, 0] == 50
    s = stats_of(srv, "gather")["inference_stats"]
    assert (s["success"]["count"], s["fail"]["count"]) == (2, 1)


def test_statistics_exact_under_concurrency(start_server, tmp_path):
    batching = "dynamic_batching { max_queue_delay_microseconds: 2000 }"
    config = sm.probe_config("probe", scheduling=batching, instances=2, dims="[ 4 ]")
    srv = serve(start_server, tmp_path, ("probe", config, sm.probe("probe", dims=(4,))))
    rng = np.random.default_rng(7)
    plan = [[int(b) for b in rng.integers(1, 5, size=25)] for _ in range(16)]

    def client_loop(index):
        grpc = index % 2 == 1
        module = grpcclient if grpc else httpclient
        client = module.InferenceServerClient(srv.grpc_url if grpc else srv.http_url)
        shares = []
        for rows in plan[index]:
            result = client.infer("probe", probe_inputs(module, rows=rows, width=4))
            batch = result.as_numpy("BATCH")
            assert batch.shape == (rows, 1) and (batch == batch[0, 0]).all()
            # Each execution of B rows is shared by its requests: their rows/B add up to 1.
            shares.append(Fraction(rows, int(batch[0, 0])))
        client.close()
        return shares

    with ThreadPoolExecutor(16) as pool:
        shares = [s for r in pool.map(client_loop, range(16)) for s in r]
    s = stats_of(srv, "probe")
    requests, rows = 16 * 25, sum(map(sum, plan))
    assert s["inference_count"] == rows
    assert s["inference_stats"]["success"]["count"] == requests
    assert s["inference_stats"]["queue"]["count"] == requests
    assert s["execution_count"] == sum(shares)
    assert sum(b["compute_infer"]["count"] for b in s["batch_stats"]) == s["execution_count"]
    assert sum(b["batch_size"] * b["compute_infer"]["count"] for b in s["batch_stats"]) == rows
    assert s["execution_count"] < requests, "requests were batched"
    samples = harness.parse_metrics(harness.request(srv.metrics_port, "GET", "/metrics")[2].decode())
    labels = {"model": "probe", "version": "1"}
    assert harness.metric(samples, "nv_inference_count", **labels) == rows
    assert harness.metric(samples, "nv_inference_exec_count", **labels) == s["execution_count"]
    assert harness.metric(samples, "nv_inference_request_success", **labels) == requests
    assert harness.metric(samples, "nv_inference_pending_request_count", **labels) == 0
