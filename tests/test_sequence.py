"""The sequence batcher through tritonclient: control inputs in each form, correlation ids as
integers and strings, implicit state, the direct and oldest strategies, the backlog, idle
sequences, Triton's errors, and Triton's simple_sequence / simple_dyna_sequence configurations.

The probe model (tests/scheduling_models.py) keeps [sum, count] of its sequence's inputs as
implicit state and echoes its controls (FLAGS = START, END, READY), its CORRID and its row in
the batch (SLOT, the sequence slot under the direct strategy).
"""

import os
import threading
import time

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

import harness
import scheduling_models as sm
from tensors import infer_inputs

pytestmark = pytest.mark.timeout(120)


def serve(start_server, tmp_path, *models):
    repo = tmp_path / "models"
    for name, config, model in models:
        harness.write_model(repo, name, config, model)
    return start_server(str(repo)), str(repo)


def seq_model(name="seq", controls="int32", corrid="uint64", **kwargs):
    return name, sm.sequence_probe_config(name, controls, corrid, **kwargs), sm.sequence_probe(name, controls, corrid)


def send(client, module, value, sequence_id, start=False, end=False, model="seq", **kwargs):
    inputs = infer_inputs(module, {"INPUT": np.array([[value]], np.int32)})
    return client.infer(model, inputs, sequence_id=sequence_id, sequence_start=start, sequence_end=end, **kwargs)


def run_sequence(client, module, values, sequence_id, model="seq"):
    return [send(client, module, v, sequence_id, i == 0, i == len(values) - 1, model) for i, v in enumerate(values)]


@pytest.mark.parametrize("controls", ["int32", "fp32", "bool"])
@pytest.mark.parametrize("corrid", ["uint64", "string"])
def test_controls_state_and_correlation_id(start_server, tmp_path, controls, corrid):
    srv, _ = serve(start_server, tmp_path, seq_model(controls=controls, corrid=corrid))
    sequence_id = 1234567890123 if corrid == "uint64" else "sequence-a"
    for module, client in ((httpclient, srv.http_client()), (grpcclient, srv.grpc_client())):
        results = run_sequence(client, module, [5, 7, -2, 10], sequence_id)
        assert [r.as_numpy("OUTPUT").tolist() for r in results] == [[[5, 1]], [[12, 2]], [[10, 3]], [[20, 4]]]
        flags = [r.as_numpy("FLAGS")[0].tolist() for r in results]
        assert flags == [[1, 0, 1], [0, 0, 1], [0, 0, 1], [0, 1, 1]]
        corrids = [r.as_numpy("CORRID_OUT")[0, 0] for r in results]
        expected = sequence_id if corrid == "uint64" else sequence_id.encode()
        assert corrids == [expected] * 4
        # A one-request sequence is both START and END.
        single = send(client, module, 3, sequence_id, start=True, end=True)
        assert (single.as_numpy("OUTPUT").tolist(), single.as_numpy("FLAGS").tolist()) == ([[3, 1]], [[1, 1, 1]])


def test_direct_sequences_keep_their_slot_and_state(start_server, tmp_path):
    srv, _ = serve(start_server, tmp_path, seq_model(max_batch_size=4))
    client = srv.http_client()
    ids = [11, 22, 33]
    slots = {i: set() for i in ids}
    for step in range(4):
        for k, sequence_id in enumerate(ids):
            result = send(client, httpclient, 10 * k + step, sequence_id, start=step == 0, end=step == 3)
            assert result.as_numpy("OUTPUT")[0, 1] == step + 1
            assert result.as_numpy("OUTPUT")[0, 0] == sum(10 * k + s for s in range(step + 1))
            slots[sequence_id].add(int(result.as_numpy("SLOT")[0, 0]))
    # Each sequence stays in its slot: the batch row the model sees. A request of slot 2 alone
    # runs in a batch of 3 rows, the first two padding: not inferences anyone asked for.
    assert slots == {11: {0}, 22: {1}, 33: {2}}
    s = client.get_inference_statistics("seq")["model_stats"][0]
    assert (s["inference_count"], s["execution_count"]) == (12, 12)
    # The slots are free again: a new sequence gets the first one.
    assert send(client, httpclient, 1, 44, start=True, end=True).as_numpy("SLOT")[0, 0] == 0


def test_oldest_batches_requests_of_several_sequences(start_server, tmp_path):
    strategy = "oldest { max_candidate_sequences: 8 preferred_batch_size: [ 4 ] max_queue_delay_microseconds: 300000 }"
    srv, _ = serve(start_server, tmp_path, seq_model(strategy=strategy, max_batch_size=4))
    results = {}

    def sequence(sequence_id):
        client = httpclient.InferenceServerClient(srv.http_url)
        results[sequence_id] = [r.as_numpy("OUTPUT")[0].tolist()
                                for r in run_sequence(client, httpclient, [sequence_id] * 5, sequence_id)]
        client.close()

    threads = [threading.Thread(target=sequence, args=(i,)) for i in (1, 2, 3, 4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in (1, 2, 3, 4):
        assert results[i] == [[i * n, n] for n in range(1, 6)]
    s = srv.http_client().get_inference_statistics("seq")["model_stats"][0]
    assert s["inference_count"] == 20
    assert s["execution_count"] < 20, "requests of different sequences shared batches"
    assert max(b["batch_size"] for b in s["batch_stats"]) > 1


def test_backlogged_sequence_waits_for_a_slot(start_server, tmp_path):
    srv, _ = serve(start_server, tmp_path, seq_model(max_batch_size=1))
    client = srv.http_client()
    send(client, httpclient, 1, 100, start=True)
    done = {}

    def second_sequence():
        c = httpclient.InferenceServerClient(srv.http_url)
        done["first"] = send(c, httpclient, 7, 200, start=True).as_numpy("OUTPUT").tolist()
        done["last"] = send(c, httpclient, 8, 200, end=True).as_numpy("OUTPUT").tolist()
        c.close()

    waiting = threading.Thread(target=second_sequence)
    waiting.start()
    time.sleep(0.5)
    assert "first" not in done, "the only slot is taken"
    send(client, httpclient, 2, 100, end=True)
    waiting.join(10)
    assert done == {"first": [[7, 1]], "last": [[15, 2]]}


def test_idle_sequence_loses_its_slot(start_server, tmp_path):
    srv, _ = serve(start_server, tmp_path, seq_model(max_batch_size=1, idle_us=500000))
    client = srv.http_client()
    send(client, httpclient, 1, 100, start=True)
    # A second sequence waits for the only slot, which the first never gives back.
    start = time.monotonic()
    other = httpclient.InferenceServerClient(srv.http_url)
    assert send(other, httpclient, 4, 200, start=True, end=True).as_numpy("OUTPUT").tolist() == [[4, 1]]
    assert 0.3 < time.monotonic() - start < 5
    other.close()
    with pytest.raises(InferenceServerException) as err:
        send(client, httpclient, 2, 100)
    assert err.value.message() == (
        "inference request for sequence 100 to model 'seq' must specify the START flag on the first request "
        "of the sequence")


def test_sequence_errors(start_server, tmp_path):
    srv, _ = serve(start_server, tmp_path, seq_model())
    client = srv.http_client()
    cases = [
        (dict(sequence_id=0, start=True),
         "inference request to model 'seq' must specify a non-zero or non-empty correlation ID"),
        (dict(sequence_id="", start=True),
         "inference request to model 'seq' must specify a non-zero or non-empty correlation ID"),
        (dict(sequence_id=5),
         "inference request for sequence 5 to model 'seq' must specify the START flag on the first request of "
         "the sequence"),
        (dict(sequence_id="text", start=True),
         "[request id: <id_unknown>] sequence batching control 'CORRID' data-type is 'BYTES', but model 'seq' "
         "expects 'UINT64'"),
    ]
    for kwargs, message in cases:
        with pytest.raises(InferenceServerException) as err:
            send(client, httpclient, 1, **kwargs)
        assert (err.value.message(), err.value.status()) == (message, "400")
    with pytest.raises(InferenceServerException) as err:
        client.infer("seq", infer_inputs(httpclient, {"INPUT": np.ones((2, 1), np.int32)}), sequence_id=9,
                     sequence_start=True)
    assert err.value.message() == (
        "inference request to model 'seq' must specify batch-size 1 due to requirements of sequence batcher")
    # An ended sequence is unknown.
    send(client, httpclient, 1, 6, start=True, end=True)
    with pytest.raises(InferenceServerException) as err:
        send(client, httpclient, 1, 6)
    assert "must specify the START flag" in err.value.message()
    grpc = srv.grpc_client()
    with pytest.raises(InferenceServerException) as err:
        send(grpc, grpcclient, 1, 7)
    assert err.value.status() == "StatusCode.INVALID_ARGUMENT"


def test_start_restarts_a_live_sequence(start_server, tmp_path):
    srv, _ = serve(start_server, tmp_path, seq_model())
    client = srv.http_client()
    send(client, httpclient, 5, 8, start=True)
    send(client, httpclient, 5, 8)
    assert send(client, httpclient, 3, 8, start=True).as_numpy("OUTPUT").tolist() == [[3, 1]], "state restarted"


def test_initial_state_from_file(start_server, tmp_path):
    name, config, model = seq_model()
    config = config.replace(
        "dims: [ 2 ] } ]",
        'dims: [ 2 ] initial_state { data_type: TYPE_INT32 dims: [ 2 ] data_file: "start" name: "hundred" } } ]')
    folder = harness.write_model(tmp_path / "models", name, config, model)
    os.makedirs(os.path.join(folder, "initial_state"))
    np.array([100, 0], np.int32).tofile(os.path.join(folder, "initial_state", "start"))
    srv = start_server(str(tmp_path / "models"))
    client = srv.http_client()
    results = run_sequence(client, httpclient, [1, 2], 3)
    assert [r.as_numpy("OUTPUT").tolist() for r in results] == [[[101, 1]], [[103, 2]]]


def test_triton_example_sequence_configurations(start_server, tmp_path):
    # Triton's docs/examples/model_repository configs, unchanged, with ONNX models of the same
    # interface: OUTPUT = READY * (INPUT + START [+ END * CORRID]).
    simple = """name: "simple_sequence"
platform: "onnxruntime_onnx"
max_batch_size: 8
sequence_batching {
  control_input [
    { name: "START" control [ { kind: CONTROL_SEQUENCE_START int32_false_true: [ 0, 1 ] } ] },
    { name: "READY" control [ { kind: CONTROL_SEQUENCE_READY int32_false_true: [ 0, 1 ] } ] }
  ]
}
input [ { name: "INPUT" data_type: TYPE_INT32 dims: [ 1 ] } ]
output [ { name: "OUTPUT" data_type: TYPE_INT32 dims: [ 1 ] } ]
instance_group [ { kind: KIND_CPU } ]
"""
    dyna = """name: "simple_dyna_sequence"
platform: "onnxruntime_onnx"
max_batch_size: 8
sequence_batching {
    max_sequence_idle_microseconds: 10000000
    oldest {
      max_candidate_sequences: 1024
      max_queue_delay_microseconds: 10000
    }
  control_input [
    { name: "START" control [ { kind: CONTROL_SEQUENCE_START int32_false_true: [ 0, 1 ] } ] },
    { name: "END" control [ { kind: CONTROL_SEQUENCE_END int32_false_true: [ 0, 1 ] } ] },
    { name: "READY" control [ { kind: CONTROL_SEQUENCE_READY int32_false_true: [ 0, 1 ] } ] },
    { name: "CORRID" control [ { kind: CONTROL_SEQUENCE_CORRID data_type: TYPE_UINT64 } ] }
  ]
}
input [ { name: "INPUT" data_type: TYPE_INT32 dims: [ 1 ] } ]
output [ { name: "OUTPUT" data_type: TYPE_INT32 dims: [ 1 ] } ]
parameters [ { key: "execute_delay_ms" value: { string_value: "3" } } ]
instance_group [ { count: 2 kind: KIND_CPU } ]
"""
    srv, _ = serve(start_server, tmp_path,
                   ("simple_sequence", simple, sm.triton_sequence("simple_sequence")),
                   ("simple_dyna_sequence", dyna, sm.triton_sequence("simple_dyna_sequence", dyna=True)))
    values = [11, 7, 5, 3, 2, 0, 1]
    outputs = {}

    def sequence(model, module, sequence_id):
        url = srv.grpc_url if module is grpcclient else srv.http_url
        client = module.InferenceServerClient(url)
        outputs[(model, sequence_id)] = [int(r.as_numpy("OUTPUT")[0, 0])
                                         for r in run_sequence(client, module, values, sequence_id, model)]
        client.close()

    threads = [threading.Thread(target=sequence, args=(m, module, i))
               for m in ("simple_sequence", "simple_dyna_sequence")
               for module, ids in ((httpclient, (1000, 1001)), (grpcclient, (1002, 1003))) for i in ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in (1000, 1001, 1002, 1003):
        assert outputs[("simple_sequence", i)] == [12] + values[1:]
        assert outputs[("simple_dyna_sequence", i)] == [12] + values[1:-1] + [values[-1] + i]
