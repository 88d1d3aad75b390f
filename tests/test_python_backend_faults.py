"""Python backend faults, with numbers: a stub that raises, exits, segfaults, is killed or hangs
fails only what it had in flight, the model reports not ready, the stub comes back, and the
requests of other models running meanwhile are all answered. Stubs also go with the server.

Run with -s to see the figures (requests lost, time to recover)."""

import os
import signal
import threading
import time

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

import harness
from test_python_backend import ADD_SUB, ADD_SUB_CONFIG, grpc_inputs, http_inputs, io, python_env, stub_pids, write_model

# MODE: 0 answers its pid, 1 raises, 2 exits, 3 segfaults, 4 sleeps a second, 5 hangs.
# initialize takes 0.3 s, like a model loading weights: restarts are visible.
CRASHER = """
    import ctypes, os, time
    import numpy as np
    import triton_python_backend_utils as pb_utils

    class TritonPythonModel:
        def initialize(self, args):
            time.sleep(0.3)

        def execute(self, requests):
            mode = int(pb_utils.get_input_tensor_by_name(requests[0], "MODE").as_numpy()[0])
            if mode == 1:
                raise RuntimeError("asked to raise")
            if mode == 2:
                os._exit(3)
            if mode == 3:
                ctypes.string_at(0)
            if mode == 4:
                time.sleep(1)
            if mode == 5:
                time.sleep(3600)
            return [pb_utils.InferenceResponse([pb_utils.Tensor("PID", np.array([os.getpid()], np.int64))]) for _ in requests]
"""
EXECUTE_TIMEOUT_S = 2


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    repository = tmp_path_factory.mktemp("faults")
    harness.copy_model("simple", repository)
    write_model(repository, "add_sub", ADD_SUB_CONFIG, ADD_SUB)
    write_model(repository, "crasher", io("input", "MODE", "TYPE_INT32", [1]) + io("output", "PID", "TYPE_INT64", [1]), CRASHER)
    srv = harness.Server(str(repository), ["--backend-config=python,execute-timeout-seconds=%d" % EXECUTE_TIMEOUT_S],
                         env=python_env())
    srv.start(timeout=60)
    try:
        yield srv
    finally:
        if srv.proc.poll() is None:
            srv.stop(expect_code=0)
        else:
            srv.kill()


class OtherModels:
    """Keeps requests going to an ONNX model (HTTP) and a Python model (gRPC) and counts them."""

    def __init__(self, server):
        self.stop = threading.Event()
        self.answered = 0
        self.lost = []
        self.threads = [threading.Thread(target=self.onnx, args=(server.http_url,)),
                        threading.Thread(target=self.python, args=(server.grpc_url,))]
        for t in self.threads:
            t.start()

    def run(self, infer):
        while not self.stop.is_set():
            try:
                infer()
                self.answered += 1
            except Exception as e:  # noqa: BLE001 - every failure counts as a lost request
                self.lost.append(str(e))

    def onnx(self, url):
        client = httpclient.InferenceServerClient(url)
        data = np.arange(16, dtype=np.int32).reshape(1, 16)
        inputs = http_inputs(("INPUT0", data), ("INPUT1", data))
        self.run(lambda: client.infer("simple", inputs))
        client.close()

    def python(self, url):
        client = grpcclient.InferenceServerClient(url)
        a = np.ones(4, np.float32)
        inputs = grpc_inputs(("INPUT0", a), ("INPUT1", a))
        self.run(lambda: client.infer("add_sub", inputs))
        client.close()

    def finish(self):
        self.stop.set()
        for t in self.threads:
            t.join()
        return self.answered, self.lost


def crasher(server, mode, client=None):
    client = client or server.grpc_client()
    return client.infer("crasher", grpc_inputs(("MODE", np.array([mode], np.int32)))).as_numpy("PID")[0]


def recover(server, since):
    """Waits for the crasher to be ready and answer again; returns (saw not ready, seconds)."""
    client = server.grpc_client()
    saw_not_ready = False
    deadline = since + 30
    while time.monotonic() < deadline:
        if not client.is_model_ready("crasher"):
            saw_not_ready = True
        else:
            try:
                crasher(server, 0, client)
                return saw_not_ready, time.monotonic() - since
            except InferenceServerException:
                pass
        time.sleep(0.002)
    raise AssertionError("the crasher did not recover in 30 s")


@pytest.mark.parametrize("mode,how", [(2, "exit"), (3, "segfault"), (4, "killed")])
def test_a_dying_stub_fails_only_its_requests(server, mode, how):
    old_pid = crasher(server, 0)
    others = OtherModels(server)
    time.sleep(0.2)
    start = time.monotonic()
    if how == "killed":
        killer = threading.Timer(0.3, os.kill, (int(old_pid), signal.SIGKILL))
        killer.start()
    with pytest.raises(InferenceServerException) as error:
        crasher(server, mode)
    failed_after = time.monotonic() - start
    message = error.value.message()
    assert "Failed to process the request(s) for model instance 'crasher_0', message: Stub process 'crasher_0' is not healthy" in message
    expected = {"exit": "exited with code 3", "segfault": "killed by signal 11", "killed": "killed by signal 9"}[how]
    assert expected in message, message
    saw_not_ready, recovered = recover(server, start)
    time.sleep(0.2)
    answered, lost = others.finish()
    new_pid = crasher(server, 0)
    print("\n[%s] in-flight request failed after %.3f s; not ready seen: %s; recovered (ready and answering) %.3f s after the fault;"
          " other models: %d answered meanwhile, %d lost" % (how, failed_after, saw_not_ready, recovered, answered, len(lost)))
    assert lost == [] and answered > 0
    assert saw_not_ready
    assert new_pid != old_pid and recovered < 10
    assert old_pid not in stub_pids(server)


def test_a_raising_model_fails_only_that_request(server):
    others = OtherModels(server)
    pid = crasher(server, 0)
    failures = 0
    for _ in range(20):
        with pytest.raises(InferenceServerException) as error:
            crasher(server, 1)
        assert "RuntimeError: asked to raise" in error.value.message()
        failures += 1
        assert crasher(server, 0) == pid, "the stub keeps running"
    answered, lost = others.finish()
    print("\n[raise] 20 raising requests failed alone; same stub after; other models: %d answered, %d lost" % (answered, len(lost)))
    assert lost == [] and failures == 20


def test_a_hanging_stub_is_killed(server):
    old_pid = crasher(server, 0)
    others = OtherModels(server)
    start = time.monotonic()
    with pytest.raises(InferenceServerException) as error:
        crasher(server, 5)
    failed_after = time.monotonic() - start
    assert "Stub process 'crasher_0' did not answer within %ds and was killed" % EXECUTE_TIMEOUT_S in error.value.message()
    assert EXECUTE_TIMEOUT_S <= failed_after < EXECUTE_TIMEOUT_S + 2
    _, recovered = recover(server, start)
    answered, lost = others.finish()
    print("\n[hang] the request failed after %.3f s (timeout %d s); recovered %.3f s after it was sent; other models: %d answered, %d lost"
          % (failed_after, EXECUTE_TIMEOUT_S, recovered, answered, len(lost)))
    assert lost == []
    assert crasher(server, 0) != old_pid


def test_stubs_exit_when_the_server_dies(tmp_path, start_server):
    write_model(tmp_path, "add_sub", ADD_SUB_CONFIG + "instance_group [ { count: 3 kind: KIND_CPU } ]\n", ADD_SUB)
    srv = start_server(str(tmp_path), env=python_env())
    pids = stub_pids(srv)
    assert len(pids) == 3
    srv.proc.kill()
    srv.proc.wait()
    start = time.monotonic()

    def alive(pid):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        try:  # a zombie not reaped yet by whoever adopted it has gone too
            with open("/proc/%d/stat" % pid) as f:
                return f.read().rsplit(")", 1)[1].split()[0] != "Z"
        except OSError:
            return True

    harness.wait_until(lambda: not any(alive(p) for p in pids), timeout=5, interval=0.01, message="stubs to exit")
    print("\n[server killed] %d stubs gone %.3f s after" % (len(pids), time.monotonic() - start))
