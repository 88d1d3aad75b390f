"""Graceful shutdown: SIGTERM/SIGINT stop the server with exit code 0, and requests already in
flight when the signal arrives still complete with correct results."""

import signal
import threading
import time

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

import harness
from tensors import add_sub_inputs, check_add_sub, infer_inputs

pytestmark = pytest.mark.timeout(120)

SLOW_CONFIG = """# OUTPUT0 = INPUT0, after ITERS rounds of busy work (tests/test_shutdown.py).
name: "slow"
platform: "onnxruntime_onnx"
max_batch_size: 0
input [
  {
    name: "INPUT0"
    data_type: TYPE_FP32
    dims: [ 16 ]
  },
  {
    name: "ITERS"
    data_type: TYPE_INT64
    dims: [ 1 ]
  }
]
output [
  {
    name: "OUTPUT0"
    data_type: TYPE_FP32
    dims: [ 16 ]
  }
]
instance_group [
  {
    count: 4
    kind: KIND_CPU
  }
]
"""


def slow_inputs(module, x, iters):
    return infer_inputs(module, {"INPUT0": x, "ITERS": np.array([iters], dtype=np.int64)})


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_idle_server_exits_0(repo, sig):
    srv = harness.Server(repo("simple"))
    srv.start()
    client = httpclient.InferenceServerClient(srv.http_url)
    inputs, a, b = add_sub_inputs(httpclient)
    check_add_sub(client.infer("simple", inputs), a, b)
    client.close()
    started = time.monotonic()
    srv.proc.send_signal(sig)
    try:
        code = srv.proc.wait(timeout=15)
    except Exception:
        srv.kill()
        raise
    assert code == 0, srv.describe()
    assert time.monotonic() - started < 15


def test_sigterm_with_requests_in_flight(tmp_path):
    path = tmp_path / "models"
    harness.write_model(path, "slow", SLOW_CONFIG, harness.make_models.build_slow())
    srv = harness.Server(str(path))
    srv.start()
    try:
        client = srv.http_client(network_timeout=120.0)
        x = np.linspace(-1, 1, 16, dtype=np.float32)
        # Calibrate: how many iterations make a request last about two seconds here?
        probe = 2000
        begun = time.monotonic()
        np.testing.assert_array_equal(client.infer("slow", slow_inputs(httpclient, x, probe)).as_numpy("OUTPUT0"), x)
        per_iter = max((time.monotonic() - begun) / probe, 1e-7)
        iters = int(min(2.0 / per_iter, 50_000_000))
        srv.close_clients()  # only the requests under test stay connected

        results, errors = {}, {}

        def run(tag, module, url):
            value = x * (tag + 1)
            if module is httpclient:
                c = httpclient.InferenceServerClient(url, connection_timeout=120.0, network_timeout=120.0)
            else:
                c = grpcclient.InferenceServerClient(url)
            try:
                if module is httpclient:
                    out = c.infer("slow", slow_inputs(httpclient, value, iters))
                else:
                    out = c.infer("slow", slow_inputs(grpcclient, value, iters), client_timeout=120.0)
                results[tag] = (out.as_numpy("OUTPUT0"), value)
            except Exception as e:  # noqa: BLE001 - reported below
                errors[tag] = e
            finally:
                c.close()

        threads = [threading.Thread(target=run, args=(0, httpclient, srv.http_url)),
                   threading.Thread(target=run, args=(1, httpclient, srv.http_url)),
                   threading.Thread(target=run, args=(2, grpcclient, srv.grpc_url))]
        for t in threads:
            t.start()
        time.sleep(0.5)
        assert all(t.is_alive() for t in threads), "requests finished before the signal; calibration off"
        signalled = time.monotonic()
        srv.proc.send_signal(signal.SIGTERM)
        for t in threads:
            t.join(timeout=100)
        assert not errors, "in-flight requests failed during shutdown: %r\n%s" % (errors, srv.describe())
        assert sorted(results) == [0, 1, 2]
        for got, expected in results.values():
            np.testing.assert_array_equal(got, expected)
        code = srv.proc.wait(timeout=60)
        assert code == 0, srv.describe()
        assert time.monotonic() - signalled < 60
    finally:
        srv.kill()
