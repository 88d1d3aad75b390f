"""Triton's `triton_python_backend_utils` for models served by Nereid: the same names and
behaviour, in plain Python over the stub's connection to the server (see nereid_stub.py)."""

import asyncio
import json
import struct

import numpy as np

# The stub's runtime (nereid_stub.Runtime), set before the model is imported.
_runtime = None


def _bind(runtime):
    global _runtime
    _runtime = runtime


TRITONSERVER_REQUEST_FLAG_SEQUENCE_START = 1
TRITONSERVER_REQUEST_FLAG_SEQUENCE_END = 2
TRITONSERVER_RESPONSE_COMPLETE_FINAL = 1
TRITONSERVER_REQUEST_RELEASE_ALL = 1
TRITONSERVER_REQUEST_RELEASE_RESCHEDULE = 2
TRITONSERVER_MEMORY_GPU = 2
TRITONSERVER_MEMORY_CPU = 0

# Wire datatype names in the order of Triton's TRITONSERVER_DataType codes (1 = BOOL, ...).
_DTYPE_NAMES = [
    "INVALID", "BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
    "FP16", "FP32", "FP64", "BYTES", "BF16",
]
_NUMPY = {
    "BOOL": np.bool_, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32,
    "UINT64": np.uint64, "INT8": np.int8, "INT16": np.int16, "INT32": np.int32,
    "INT64": np.int64, "FP16": np.float16, "FP32": np.float32, "FP64": np.float64,
    "BYTES": np.object_,
}

TRITON_STRING_TO_NUMPY = {"TYPE_" + name: dtype for name, dtype in _NUMPY.items()}
TRITON_STRING_TO_NUMPY["TYPE_BOOL"] = bool
TRITON_STRING_TO_NUMPY["TYPE_STRING"] = np.object_


def triton_string_to_numpy(triton_type_string):
    return TRITON_STRING_TO_NUMPY[triton_type_string]


def triton_to_numpy_type(data_type):
    name = _DTYPE_NAMES[data_type] if 0 < data_type < len(_DTYPE_NAMES) else None
    return _NUMPY.get(name)


def numpy_to_triton_type(data_type):
    name = _wire_dtype(np.dtype(data_type))
    return _DTYPE_NAMES.index(name) if name else None


def _wire_dtype(dtype):
    if dtype.kind in "OSU":
        return "BYTES"
    for name, numpy_type in _NUMPY.items():
        if numpy_type is not np.object_ and dtype == np.dtype(numpy_type):
            return name
    return None


def serialize_byte_tensor(input_tensor):
    """Triton's BYTES layout: each element (in C order) as a 4-byte little-endian length and
    its bytes; str elements are encoded as UTF-8. Returns None for non-string arrays."""
    if input_tensor.size == 0:
        return ()
    if input_tensor.dtype != np.object_ and input_tensor.dtype.type != np.bytes_:
        return None
    parts = []
    for item in input_tensor.reshape(-1, order="C"):
        if not isinstance(item, bytes):
            item = str(item).encode("utf-8")
        parts.append(struct.pack("<I", len(item)))
        parts.append(item)
    return b"".join(parts)


def deserialize_bytes_tensor(encoded_tensor):
    """The inverse of serialize_byte_tensor: a 1-D object array of bytes."""
    items = []
    view = memoryview(encoded_tensor)
    offset = 0
    while offset < len(view):
        (length,) = struct.unpack_from("<I", view, offset)
        offset += 4
        items.append(bytes(view[offset:offset + length]))
        offset += length
    return np.array(items, dtype=np.object_)


def get_input_tensor_by_name(inference_request, name):
    for tensor in inference_request.inputs():
        if tensor.name() == name:
            return tensor
    return None


def get_output_tensor_by_name(inference_response, name):
    for tensor in inference_response.output_tensors():
        if tensor.name() == name:
            return tensor
    return None


def get_input_config_by_name(model_config, name):
    for properties in model_config.get("input", []):
        if properties["name"] == name:
            return properties
    return None


def get_output_config_by_name(model_config, name):
    for properties in model_config.get("output", []):
        if properties["name"] == name:
            return properties
    return None


def using_decoupled_model_transaction_policy(model_config):
    return model_config.get("model_transaction_policy", {}).get("decoupled", False)


def get_model_dir():
    """The model version's folder, where model.py is."""
    return _runtime.version_dir


class TritonError:
    UNKNOWN = 0
    INTERNAL = 1
    NOT_FOUND = 2
    INVALID_ARG = 3
    UNAVAILABLE = 4
    UNSUPPORTED = 5
    ALREADY_EXISTS = 6
    CANCELLED = 7

    def __init__(self, message, code=INTERNAL):
        if message is None or code is None:
            raise TypeError("TritonError needs a message and a code")
        self._message = message
        self._code = code

    def message(self):
        return self._message

    def code(self):
        return self._code

    def __repr__(self):
        return "TritonError(%r, %d)" % (self._message, self._code)


class TritonModelException(Exception):
    pass


class PreferredMemory:
    def __init__(self, preferred_memory_type, preferred_device_id=0):
        self.preferred_memory_type = preferred_memory_type
        self.preferred_device_id = preferred_device_id


class InferenceTrace:
    def get_context(self):
        return None


class _Capsule:
    """Lets numpy import a raw DLPack capsule (numpy takes objects with __dlpack__)."""

    def __init__(self, capsule):
        self.capsule = capsule

    def __dlpack__(self, **_):
        return self.capsule

    def __dlpack_device__(self):
        return (1, 0)


class Tensor:
    """A named tensor. Inputs are numpy views of the server's shared memory (no copy)."""

    def __init__(self, name, numpy_array):
        if not isinstance(numpy_array, np.ndarray):
            raise TritonModelException("Tensor '%s': expected a numpy array, got %s" % (name, type(numpy_array)))
        dtype = _wire_dtype(numpy_array.dtype)
        if dtype is None:
            raise TritonModelException("Tensor '%s': unsupported numpy dtype %s" % (name, numpy_array.dtype))
        if dtype == "BYTES" and numpy_array.dtype != np.object_:
            numpy_array = numpy_array.astype(np.object_)
        self._name = name
        self._dtype = dtype
        self._array = numpy_array
        self._shape = list(numpy_array.shape)

    @classmethod
    def _from_buffer(cls, name, dtype, shape, buffer):
        """A tensor over `buffer` (shared memory) as the wire describes it."""
        tensor = cls.__new__(cls)
        tensor._name, tensor._dtype, tensor._shape = name, dtype, list(shape)
        if dtype == "BYTES":
            tensor._array = deserialize_bytes_tensor(buffer).reshape(shape)
        elif dtype == "BF16":
            tensor._array = np.frombuffer(buffer, np.uint16).reshape(shape)
        else:
            tensor._array = np.frombuffer(buffer, _NUMPY[dtype]).reshape(shape)
        return tensor

    def name(self):
        return self._name

    def shape(self):
        return list(self._shape)

    def triton_dtype(self):
        return _DTYPE_NAMES.index(self._dtype)

    def is_cpu(self):
        return True

    def as_numpy(self):
        if self._dtype == "BF16":
            raise TritonModelException("as_numpy() is not supported for BF16 tensors: use to_dlpack()")
        return self._array

    def to_dlpack(self):
        return self.__dlpack__()

    def __dlpack__(self, stream=None):
        if self._dtype in ("BYTES", "BF16"):
            raise TritonModelException("DLPack does not support %s tensors" % self._dtype)
        return self._array.__dlpack__(stream=stream)

    def __dlpack_device__(self):
        return (1, 0)

    @staticmethod
    def from_dlpack(tensor_name, dlpack_tensor):
        source = dlpack_tensor if hasattr(dlpack_tensor, "__dlpack__") else _Capsule(dlpack_tensor)
        array = np.from_dlpack(source)
        if not array.flags.c_contiguous:
            raise TritonModelException("DLPack tensor is not contiguous. Only contiguous DLPack tensors that are stored in C-Order are supported.")
        return Tensor(tensor_name, array)

    def __repr__(self):
        return "Tensor(%r, %s, %s)" % (self._name, self._dtype, self._shape)


def _parameters_json(parameters):
    parameters = parameters or {}
    for key, value in parameters.items():
        if not isinstance(key, str) or not isinstance(value, (bool, int, str)):
            raise TritonModelException("Expected parameters to be a dict of str keys and bool, int or str values")
    return json.dumps(parameters)


class InferenceRequest:
    """A request: the ones `execute` receives, or one a model makes for BLS."""

    def __init__(self, request_id="", correlation_id=0, inputs=None, requested_output_names=None,
                 model_name=None, model_version=-1, flags=0, timeout=0, preferred_memory=None,
                 trace=None, parameters=None):
        if inputs is None or requested_output_names is None or model_name is None:
            raise TypeError("InferenceRequest needs inputs, requested_output_names and model_name")
        if not isinstance(correlation_id, (int, str)):
            raise TritonModelException("Correlation ID must be integer or string")
        self._request_id = request_id
        self._correlation_id = correlation_id
        self._inputs = list(inputs)
        self._requested_output_names = list(requested_output_names)
        self._model_name = model_name
        self._model_version = model_version
        self._flags = flags
        self._timeout = timeout
        self._parameters = _parameters_json(parameters)
        self._sender = None
        self._key = None
        self._release_flags = TRITONSERVER_REQUEST_RELEASE_ALL

    def inputs(self):
        return self._inputs

    def request_id(self):
        return self._request_id

    def correlation_id(self):
        return self._correlation_id

    def flags(self):
        return self._flags

    def set_flags(self, flags):
        self._flags = flags

    def timeout(self):
        return self._timeout

    def parameters(self):
        return self._parameters

    def trace(self):
        return InferenceTrace()

    def requested_output_names(self):
        return self._requested_output_names

    def get_response_sender(self):
        if self._sender is None:
            raise TritonModelException("Unable to get the response sender of a BLS request")
        return self._sender

    def is_cancelled(self):
        return self._sender is not None and self._sender.is_cancelled()

    def set_release_flags(self, flags):
        if flags != TRITONSERVER_REQUEST_RELEASE_ALL:
            raise TritonModelException("Request rescheduling is not supported")
        self._release_flags = flags

    def exec(self, decoupled=False):
        """Runs the request on another model (BLS). Decoupled: an iterator of responses."""
        responses = ResponseIterator(_runtime.bls(self, decoupled))
        return responses if decoupled else next(responses)

    def async_exec(self, decoupled=False):
        loop = asyncio.get_running_loop()
        return loop.run_in_executor(None, self.exec, decoupled)


class InferenceResponse:
    def __init__(self, output_tensors=None, error=None, parameters=None):
        self._output_tensors = list(output_tensors or [])
        self._error = error
        self._parameters = _parameters_json(parameters)

    def output_tensors(self):
        return self._output_tensors

    def has_error(self):
        return self._error is not None

    def error(self):
        return self._error

    def parameters(self):
        return self._parameters


class InferenceResponseSender:
    """Sends a request's responses. Decoupled models send any number and then the final flag;
    other models send exactly one response (with the final flag, or a flag-only send after)."""

    def __init__(self, request, decoupled):
        self._request = request
        self._decoupled = decoupled
        self._sent = 0
        self._closed = False
        # A non-decoupled model's one response, returned with the execute reply.
        self._response = None

    def send(self, response=None, flags=0):
        if flags not in (0, TRITONSERVER_RESPONSE_COMPLETE_FINAL):
            raise TritonModelException("Unable to send response. Unsupported flag provided.")
        if response is None and flags != TRITONSERVER_RESPONSE_COMPLETE_FINAL:
            raise TritonModelException("Inference Response object is needed when the flags is not set to TRITONSERVER_RESPONSE_COMPLETE_FINAL.")
        if not self._decoupled:
            if response is not None and self._sent > 0:
                raise TritonModelException("Unable to send response. Non-decoupled model cannot send more than one response.")
            if response is None and self._sent == 0:
                raise TritonModelException("Unable to send response. Non-decoupled model cannot send complete final before sending a response.")
        if self._closed:
            raise TritonModelException("Unable to send response. Response sender has been closed.")
        if flags == TRITONSERVER_RESPONSE_COMPLETE_FINAL:
            self._closed = True
        self._sent += 1
        if self._decoupled:
            _runtime.send(self._request, response, flags)
        elif response is not None:
            self._response = response

    def is_cancelled(self):
        return self._decoupled and _runtime.is_cancelled(self._request)


class ResponseIterator:
    """The responses of a BLS request, as the server streams them."""

    def __init__(self, replies):
        self._replies = replies

    def __iter__(self):
        return self

    def __next__(self):
        return next(self._replies)

    def cancel(self):
        self._replies.cancel()


class Logger:
    INFO = "I"
    WARNING = "W"
    ERROR = "E"
    VERBOSE = "V"

    @staticmethod
    def log(message, level=INFO):
        _runtime.log(level, message)

    @staticmethod
    def log_info(message):
        _runtime.log(Logger.INFO, message)

    @staticmethod
    def log_warn(message):
        _runtime.log(Logger.WARNING, message)

    @staticmethod
    def log_error(message):
        _runtime.log(Logger.ERROR, message)

    @staticmethod
    def log_verbose(message):
        _runtime.log(Logger.VERBOSE, message)


class Metric:
    """One labelled metric of a family, kept by the server and shown on /metrics."""

    def __init__(self, metric_id):
        self._id = metric_id

    def increment(self, value):
        _runtime.metric({"op": "metric_update", "metric": self._id, "action": "increment", "value": value})

    def set(self, value):
        _runtime.metric({"op": "metric_update", "metric": self._id, "action": "set", "value": value})

    def observe(self, value):
        _runtime.metric({"op": "metric_update", "metric": self._id, "action": "observe", "value": value})

    def value(self):
        return _runtime.metric({"op": "metric_value", "metric": self._id})["value"]

    def __del__(self):
        _runtime.forget({"op": "metric_delete", "metric": self._id})


class MetricFamily:
    COUNTER = "COUNTER"
    GAUGE = "GAUGE"
    HISTOGRAM = "HISTOGRAM"

    def __init__(self, name, description, kind):
        if kind not in (self.COUNTER, self.GAUGE, self.HISTOGRAM):
            raise TritonModelException("Unknown metric kind %r" % (kind,))
        self._id = None
        reply = _runtime.metric({"op": "metric_family", "name": name, "description": description, "kind": kind})
        self._id = reply["family"]

    def Metric(self, labels=None, buckets=None):  # noqa: N802 - Triton's name
        request = {"op": "metric", "family": self._id, "labels": labels or {}}
        if buckets is not None:
            request["buckets"] = [float(b) for b in buckets]
        return Metric(_runtime.metric(request)["metric"])

    def __del__(self):
        if self._id is not None:
            _runtime.forget({"op": "metric_family_delete", "family": self._id})


def load_model(model_name, config="", files=None):
    """Loads (or reloads) a model; the server must run with --model-control-mode=explicit."""
    _runtime.model_api({"op": "load_model", "name": model_name, "config": config,
                        "files": {key: bytes(value).hex() for key, value in (files or {}).items()}})


def unload_model(model_name, unload_dependents=False):
    _runtime.model_api({"op": "unload_model", "name": model_name, "unload_dependents": unload_dependents})


def is_model_ready(model_name, model_version=""):
    return _runtime.model_api({"op": "is_model_ready", "name": model_name, "version": model_version})["ready"]


class ModelConfig:
    """The config given to `auto_complete_config`: readable with as_dict(); max_batch_size,
    inputs, outputs, dynamic batching and the transaction policy can be set."""

    def __init__(self, model_config):
        self._model_config = json.loads(model_config)

    def as_dict(self):
        return self._model_config

    def _name(self):
        return self._model_config["name"]

    def set_max_batch_size(self, max_batch_size):
        configured = self._model_config["max_batch_size"]
        if configured > max_batch_size:
            raise ValueError(
                "configuration specified max_batch_size %d, but in auto-complete-config function for model '%s' specified max_batch_size %d"
                % (configured, self._name(), max_batch_size))
        self._model_config["max_batch_size"] = max_batch_size

    def set_dynamic_batching(self):
        for scheduler in ("sequence_batching", "ensemble_scheduling"):
            if scheduler in self._model_config:
                raise ValueError(
                    "Configuration specified scheduling_choice as '%s', but auto-complete-config function for model '%s' tries to set scheduling_choice as 'dynamic_batching'"
                    % (scheduler, self._name()))
        self._model_config.setdefault("dynamic_batching", {})

    def add_input(self, input):  # noqa: A002 - Triton's name
        self._add_tensor("input", input, ("name", "data_type", "dims", "optional"))

    def add_output(self, output):
        self._add_tensor("output", output, ("name", "data_type", "dims"))

    def _add_tensor(self, kind, tensor, allowed):
        model = self._name()
        for key in tensor:
            if key not in allowed:
                raise ValueError("%s '%s' in auto-complete-config function for model '%s' contains property other than %s."
                                 % (kind, tensor.get("name"), model, ", ".join("'%s'" % a for a in allowed)))
        if "name" not in tensor:
            raise ValueError("%s in auto-complete-config function for model '%s' is missing 'name' property." % (kind, model))
        for key in ("data_type", "dims"):
            if key not in tensor:
                raise ValueError("%s '%s' in auto-complete-config function for model '%s' is missing '%s' property."
                                 % (kind, tensor["name"], model, key))
        existing = self._model_config.setdefault(kind, [])
        for current in existing:
            if current["name"] != tensor["name"]:
                continue
            if current["data_type"] != "TYPE_INVALID" and current["data_type"] != tensor["data_type"]:
                raise ValueError("unable to load model '%s', configuration expects datatype %s for %s '%s', model provides %s"
                                 % (model, current["data_type"], kind, tensor["name"], tensor["data_type"]))
            if current["dims"] and current["dims"] != tensor["dims"]:
                raise ValueError("model '%s', tensor '%s': the model expects dims %s but the model configuration specifies dims %s"
                                 % (model, tensor["name"], tensor["dims"], current["dims"]))
            if "optional" in current and "optional" in tensor and current["optional"] != tensor["optional"]:
                raise ValueError("model '%s', tensor '%s': the model expects optional %s but the model configuration specifies optional %s"
                                 % (model, tensor["name"], tensor["optional"], current["optional"]))
            current.update(tensor)
            return
        existing.append(dict(tensor))

    def set_model_transaction_policy(self, transaction_policy_dict):
        for key in transaction_policy_dict:
            if key != "decoupled":
                raise ValueError("model transaction property in auto-complete-config function for model '%s' contains property other than 'decoupled'." % self._name())
        policy = self._model_config.setdefault("model_transaction_policy", {})
        if "decoupled" in transaction_policy_dict:
            wanted = transaction_policy_dict["decoupled"]
            if "decoupled" in policy and policy["decoupled"] != wanted:
                raise ValueError("trying to change decoupled property in auto-complete-config for model '%s', which is already set to '%s'."
                                 % (self._name(), policy["decoupled"]))
            policy["decoupled"] = wanted
