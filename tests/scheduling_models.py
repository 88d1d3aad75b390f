"""ONNX models whose outputs show how the scheduler ran them, for the scheduling, sequence and
ensemble tests. Each builder returns an onnx.ModelProto; `harness.write_model` puts it in a
repository.

- `probe`: OUTPUT = INPUT; BATCH = the batch size the model was executed with; SLOT = the row's
  position in that batch. Optionally slow: a loop of small matrix products (`iters` times, or
  as many as the largest ITERS input of the batch).
- `sequence_probe`: a sequence model with implicit state: OUTPUT = STATE_OUT = STATE_IN +
  [INPUT, 1] (the running sum and count of its sequence), FLAGS = its START, END and READY
  controls, CORRID_OUT = its CORRID control, SLOT = its row in the batch.
- `triton_sequence`: the interface of Triton's simple_sequence / simple_dyna_sequence examples:
  OUTPUT = READY * (INPUT + START [+ END * CORRID]).
"""

import numpy as np
from onnx import TensorProto, helper

import harness

make_models = harness.make_models
_tensor = make_models._tensor
LOOP = 64


def _const(name, elem_type, dims, values):
    return helper.make_tensor(name, elem_type, dims, values)


def _batch_nodes(reference, elem_type):
    """Nodes giving BATCH (int64 [batch, 1], the batch size) and SLOT (the row index) from
    `reference`, a [batch, ...] tensor."""
    nodes = [
        helper.make_node("Shape", [reference], ["shape"]),
        helper.make_node("Slice", ["shape", "zero_i", "one_i"], ["batch"]),
        # A [batch, 1] column of zeros: the first column of `reference`, times zero.
        helper.make_node("Slice", [reference, "zero_i", "one_i", "one_i"], ["column"]),
        helper.make_node("Cast", ["column"], ["column_i"], to=TensorProto.INT64),
        helper.make_node("Mul", ["column_i", "zero_s"], ["zeros"]),
        helper.make_node("Add", ["zeros", "batch"], ["BATCH"]),
        helper.make_node("Add", ["zeros", "one_i"], ["ones"]),
        helper.make_node("CumSum", ["ones", "zero_s"], ["position"]),
        helper.make_node("Sub", ["position", "one_i"], ["SLOT"]),
    ]
    initializers = [
        _const("zero_i", TensorProto.INT64, [1], [0]),
        _const("one_i", TensorProto.INT64, [1], [1]),
        _const("zero_s", TensorProto.INT64, [], [0]),
    ]
    return nodes, initializers


def _loop_nodes(trip_count, output):
    """A busy loop of `trip_count` (an int64 scalar tensor) matrix products; `output` is a
    float scalar zero that depends on it."""
    w = np.full((LOOP, LOOP), 1.0 / LOOP, dtype=np.float32)
    body = helper.make_graph(
        [
            helper.make_node("MatMul", ["x_in", "W"], ["prod"]),
            helper.make_node("Tanh", ["prod"], ["x_out"]),
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
        ],
        "body",
        [_tensor("i", TensorProto.INT64, []), _tensor("cond_in", TensorProto.BOOL, []),
         _tensor("x_in", TensorProto.FLOAT, [LOOP, LOOP])],
        [_tensor("cond_out", TensorProto.BOOL, []), _tensor("x_out", TensorProto.FLOAT, [LOOP, LOOP])],
    )
    nodes = [
        helper.make_node("Loop", [trip_count, "true", "x0"], ["x_final"], body=body),
        helper.make_node("ReduceSum", ["x_final"], ["total"], keepdims=0),
        helper.make_node("Mul", ["total", "zero_f"], [output]),
    ]
    initializers = [
        _const("W", TensorProto.FLOAT, w.shape, w.flatten().tolist()),
        _const("x0", TensorProto.FLOAT, w.shape, np.ones(w.size).tolist()),
        _const("true", TensorProto.BOOL, [], [True]),
        _const("zero_f", TensorProto.FLOAT, [], [0.0]),
    ]
    return nodes, initializers


def probe(name, iters=0, iters_input=False, dims=("n",)):
    """INPUT FP32 [batch, *dims] -> OUTPUT (= INPUT), BATCH and SLOT (INT64 [batch, 1])."""
    shape = ["batch"] + list(dims)
    nodes, initializers = _batch_nodes("INPUT", TensorProto.FLOAT)
    inputs = [_tensor("INPUT", TensorProto.FLOAT, shape)]
    if iters or iters_input:
        if iters_input:
            inputs.append(_tensor("ITERS", TensorProto.INT64, ["batch", 1]))
            nodes.append(helper.make_node("ReduceMax", ["ITERS"], ["trip"], keepdims=0))
        else:
            initializers.append(_const("trip", TensorProto.INT64, [], [iters]))
        loop, loop_init = _loop_nodes("trip", "nothing")
        nodes += loop + [helper.make_node("Add", ["INPUT", "nothing"], ["OUTPUT"])]
        initializers += loop_init
    else:
        nodes.append(helper.make_node("Identity", ["INPUT"], ["OUTPUT"]))
    outputs = [_tensor("OUTPUT", TensorProto.FLOAT, shape), _tensor("BATCH", TensorProto.INT64, ["batch", 1]),
               _tensor("SLOT", TensorProto.INT64, ["batch", 1])]
    return make_models._finish(helper.make_graph(nodes, name, inputs, outputs, initializer=initializers))


def probe_config(name, max_batch_size=8, scheduling="", instances=1, extra="", dims="[ -1 ]", iters_input=False):
    iters = '{ name: "ITERS" data_type: TYPE_INT64 dims: [ 1 ] },' if iters_input else ""
    return """name: "%s"
backend: "onnxruntime"
max_batch_size: %d
%s
input [ %s { name: "INPUT" data_type: TYPE_FP32 dims: %s %s } ]
output [
  { name: "OUTPUT" data_type: TYPE_FP32 dims: %s },
  { name: "BATCH" data_type: TYPE_INT64 dims: [ 1 ] },
  { name: "SLOT" data_type: TYPE_INT64 dims: [ 1 ] }
]
instance_group [ { kind: KIND_CPU count: %d } ]
parameters { key: "intra_op_thread_count" value: { string_value: "1" } }
""" % (name, max_batch_size, scheduling, iters, dims, extra, dims, instances)


CONTROL_TYPES = {"int32": TensorProto.INT32, "fp32": TensorProto.FLOAT, "bool": TensorProto.BOOL}
CONFIG_TYPES = {"int32": "TYPE_INT32", "fp32": "TYPE_FP32", "bool": "TYPE_BOOL"}
FALSE_TRUE = {"int32": "int32_false_true: [ 0, 1 ]", "fp32": "fp32_false_true: [ 0, 1 ]",
              "bool": "bool_false_true: [ false, true ]"}


def sequence_probe(name, controls="int32", corrid="uint64"):
    """See the module docstring. `controls`: the type of START/END/READY (int32, fp32, bool);
    `corrid`: uint64 or string."""
    ctype = CONTROL_TYPES[controls]
    corrid_type = TensorProto.UINT64 if corrid == "uint64" else TensorProto.STRING
    col = ["batch", 1]
    nodes, initializers = _batch_nodes("INPUT", TensorProto.INT32)
    nodes += [
        helper.make_node("Cast", ["ones"], ["ones_i32"], to=TensorProto.INT32),
        helper.make_node("Concat", ["INPUT", "ones_i32"], ["step"], axis=1),
        helper.make_node("Add", ["STATE_IN", "step"], ["STATE_OUT"]),
        helper.make_node("Identity", ["STATE_OUT"], ["OUTPUT"]),
        helper.make_node("Cast", ["START"], ["start_f"], to=TensorProto.FLOAT),
        helper.make_node("Cast", ["END"], ["end_f"], to=TensorProto.FLOAT),
        helper.make_node("Cast", ["READY"], ["ready_f"], to=TensorProto.FLOAT),
        helper.make_node("Concat", ["start_f", "end_f", "ready_f"], ["FLAGS"], axis=1),
        helper.make_node("Identity", ["CORRID"], ["CORRID_OUT"]),
    ]
    inputs = [_tensor("INPUT", TensorProto.INT32, col), _tensor("START", ctype, col), _tensor("END", ctype, col),
              _tensor("READY", ctype, col), _tensor("CORRID", corrid_type, col),
              _tensor("STATE_IN", TensorProto.INT32, ["batch", 2])]
    outputs = [_tensor("OUTPUT", TensorProto.INT32, ["batch", 2]), _tensor("STATE_OUT", TensorProto.INT32, ["batch", 2]),
               _tensor("FLAGS", TensorProto.FLOAT, ["batch", 3]), _tensor("CORRID_OUT", corrid_type, col),
               _tensor("SLOT", TensorProto.INT64, col)]
    return make_models._finish(helper.make_graph(nodes, name, inputs, outputs, initializer=initializers))


def sequence_probe_config(name, controls="int32", corrid="uint64", strategy="", idle_us=5000000,
                          max_batch_size=4, instances=1):
    control = lambda n, kind: '{ name: "%s" control [ { kind: %s %s } ] }' % (n, kind, FALSE_TRUE[controls])
    corrid_type = "TYPE_UINT64" if corrid == "uint64" else "TYPE_STRING"
    return """name: "%s"
backend: "onnxruntime"
max_batch_size: %d
sequence_batching {
  max_sequence_idle_microseconds: %d
  %s
  control_input [
    %s,
    %s,
    %s,
    { name: "CORRID" control [ { kind: CONTROL_SEQUENCE_CORRID data_type: %s } ] }
  ]
  state [ { input_name: "STATE_IN" output_name: "STATE_OUT" data_type: TYPE_INT32 dims: [ 2 ] } ]
}
input [ { name: "INPUT" data_type: TYPE_INT32 dims: [ 1 ] } ]
output [
  { name: "OUTPUT" data_type: TYPE_INT32 dims: [ 2 ] },
  { name: "FLAGS" data_type: TYPE_FP32 dims: [ 3 ] },
  { name: "CORRID_OUT" data_type: %s dims: [ 1 ] },
  { name: "SLOT" data_type: TYPE_INT64 dims: [ 1 ] }
]
instance_group [ { kind: KIND_CPU count: %d } ]
""" % (name, max_batch_size, idle_us, strategy, control("START", "CONTROL_SEQUENCE_START"),
       control("END", "CONTROL_SEQUENCE_END"), control("READY", "CONTROL_SEQUENCE_READY"), corrid_type,
       corrid_type, instances)


def triton_sequence(name, dyna=False):
    """The interface of Triton's simple_sequence (dyna=False) or simple_dyna_sequence."""
    col = ["batch", 1]
    nodes = [helper.make_node("Add", ["INPUT", "START"], ["started"])]
    inputs = [_tensor("INPUT", TensorProto.INT32, col), _tensor("START", TensorProto.INT32, col)]
    total = "started"
    if dyna:
        inputs += [_tensor("END", TensorProto.INT32, col), _tensor("CORRID", TensorProto.UINT64, col)]
        nodes += [
            helper.make_node("Cast", ["CORRID"], ["corrid"], to=TensorProto.INT32),
            helper.make_node("Mul", ["END", "corrid"], ["ended"]),
            helper.make_node("Add", ["started", "ended"], ["total"]),
        ]
        total = "total"
    inputs.append(_tensor("READY", TensorProto.INT32, col))
    nodes.append(helper.make_node("Mul", ["READY", total], ["OUTPUT"]))
    outputs = [_tensor("OUTPUT", TensorProto.INT32, col)]
    return make_models._finish(helper.make_graph(nodes, name, inputs, outputs))


def slow_iterations(seconds):
    """About how many loop iterations of a probe take `seconds` on this machine."""
    import time

    model = probe("calibrate", iters_input=True)
    session_options = __import__("onnxruntime").SessionOptions()
    session_options.intra_op_num_threads = 1
    session = __import__("onnxruntime").InferenceSession(model.SerializeToString(), session_options,
                                                          providers=["CPUExecutionProvider"])
    feeds = {"INPUT": np.zeros((1, 1), np.float32), "ITERS": np.array([[10000]], np.int64)}
    times = []
    for _ in range(3):
        start = time.perf_counter()
        session.run(None, feeds)
        times.append(time.perf_counter() - start)
    return max(1, int(seconds * 10000 / min(times)))
