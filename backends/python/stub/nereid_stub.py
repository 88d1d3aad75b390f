"""Nereid's Python backend stub: runs one instance of a Triton Python model (model.py with
class TritonPythonModel) for the server, in whatever interpreter the server started.

    python nereid_stub.py <control fd> <side fd>

The server sends its requests on the control socket and they run here on the main thread, one
at a time: auto_complete, initialize, execute, finalize. Everything else goes over the side
socket (see nereid_ipc.py).
"""

import asyncio
import importlib
import json
import os
import signal
import sys
import threading
import traceback
import weakref

import nereid_ipc

# Imported in main(), so that a Python without them still reports why to the server.
np = None
pb_utils = None


def describe(error):
    """An exception the way Triton's stub reports one: type, message and the frames."""
    lines = ["%s: %s" % (type(error).__name__, error), "", "At:"]
    for frame in reversed(traceback.extract_tb(error.__traceback__)):
        lines.append("  %s(%d): %s" % (frame.filename, frame.lineno, frame.name))
    return "\n".join(lines) + "\n"


def import_model(model):
    """Imports model.py as Triton does: `<version>.<file>` with the model's folder and its
    version folder on sys.path."""
    sys.path.append(model["version_dir"])
    sys.path.append(model["model_dir"])
    stem = os.path.splitext(model["file"])[0]
    return importlib.import_module("%s.%s" % (os.path.basename(model["version_dir"]), stem))


class Runtime:
    def __init__(self, control_fd, side_fd):
        self.control = nereid_ipc.Connection(control_fd)
        self.side = nereid_ipc.SideChannel(nereid_ipc.Connection(side_fd), self.serve)
        self.arena = nereid_ipc.Arena(self.announce)
        self.peer = nereid_ipc.Peer()
        self.model = None
        self.name = ""
        self.version_dir = ""
        self.decoupled = False
        self.loop = None

    # -- the side channel ------------------------------------------------------------------------
    def serve(self, message):
        """The server's requests on the side socket (run on its reader thread)."""
        for segment, offset, length in message.get("free", ()):
            self.arena.free(segment, offset, length)
        op = message["op"]
        if op == "map":
            self.peer.map(message["segment"], message["name"], message["size"])
            return {}
        if op == "is_ready":
            try:
                ready = self.model.is_ready()
                if asyncio.iscoroutine(ready):
                    ready = self.run_coroutine(ready).result()
                return {"ready": bool(ready)}
            except Exception as e:  # noqa: BLE001 - a failing check means not ready
                self.log("E", "is_ready() failed: " + describe(e))
                return {"ready": False}
        return None

    def announce(self, segment, name, size):
        self.side.call({"op": "map", "segment": segment, "name": name, "size": size})

    def log(self, level, message, depth=2):
        frame = sys._getframe(depth)
        self.side.send({"op": "log", "level": level, "message": str(message),
                        "file": frame.f_code.co_filename, "line": frame.f_lineno})

    def metric(self, request):
        reply = self.side.call(request)
        if "error" in reply:
            raise pb_utils.TritonModelException(reply["error"])
        return reply

    def forget(self, message):
        try:
            self.side.send(message)
        except OSError:
            pass  # at exit the server may be gone already

    model_api = metric

    def is_cancelled(self, request):
        return self.side.call({"op": "is_cancelled", "key": request._key})["cancelled"]

    def send(self, request, response, flags):
        """A decoupled response; the server may free the request's inputs after a final one."""
        self.side.send({"op": "send", "key": request._key, "final": bool(flags),
                        "response": None if response is None else self.encode(response, request)})

    # -- tensors ---------------------------------------------------------------------------------
    def tensor(self, wire, free):
        """An input (free=False: the server frees it with the request) or a BLS output (freed
        when numpy lets go of it)."""
        length = wire["length"]
        buffer = self.peer.buffer(wire["segment"], wire["offset"], length) if length else b""
        tensor = pb_utils.Tensor._from_buffer(wire["name"], wire["datatype"], wire["shape"], buffer)
        if free and length:
            block = (wire["segment"], wire["offset"], length)
            if wire["datatype"] == "BYTES":
                self.side.free(*block)  # deserialized: a copy already
            else:
                # Every view of the data keeps the array that holds the buffer alive.
                owner = tensor._array
                while isinstance(owner.base, np.ndarray):
                    owner = owner.base
                weakref.finalize(owner, self.side.free, *block)
        return tensor

    def put(self, tensor, inputs=()):
        """Describes an output for the server: a part of one of `inputs` when it is one (an
        identity costs no copy), else a copy into this stub's shared memory."""
        array = tensor._array
        wire = {"name": tensor._name, "datatype": tensor._dtype, "shape": list(array.shape)}
        if tensor._dtype == "BYTES":
            data = pb_utils.serialize_byte_tensor(array) or b""
        else:
            data = np.ascontiguousarray(array)
            found = self.find_input(data, inputs)
            if found is not None:
                wire["input"], wire["start"] = found
                wire["length"] = data.nbytes
                return wire
            data = data.reshape(-1).view(np.uint8)
        wire["length"] = len(data)
        wire["segment"], wire["offset"] = self.arena.write(data) if len(data) else (-1, 0)
        return wire

    @staticmethod
    def find_input(array, inputs):
        if array.nbytes == 0:
            return None
        start = array.__array_interface__["data"][0]
        for index, source in enumerate(inputs):
            if source._dtype == "BYTES" or not source._array.nbytes:
                continue
            base = source._array.__array_interface__["data"][0]
            if base <= start and start + array.nbytes <= base + source._array.nbytes:
                return index, start - base
        return None

    def encode(self, response, request):
        if not isinstance(response, pb_utils.InferenceResponse):
            raise pb_utils.TritonModelException(
                "Expected an 'InferenceResponse' object in the execute function return list, found type '%s'." % type(response))
        encoded = {"parameters": json.loads(response.parameters())}
        if response.has_error():
            error = response.error()
            encoded["error"] = {"code": error.code(), "message": error.message()}
            return encoded
        wanted = request.requested_output_names()
        inputs = request._inputs
        encoded["outputs"] = [self.put(t, inputs) for t in response.output_tensors() if t.name() in wanted]
        return encoded

    # -- the control socket ----------------------------------------------------------------------
    def start(self, message):
        model = message["model"]
        self.name = model["name"]
        self.version_dir = model["version_dir"]
        self.decoupled = model["decoupled"]
        return import_model(model)

    def auto_complete(self, message):
        module = self.start(message)
        config = pb_utils.ModelConfig(message["config"])
        complete = getattr(module.TritonPythonModel, "auto_complete_config", None)
        if complete is not None:
            config = complete(config)
        if not isinstance(config, pb_utils.ModelConfig):
            raise pb_utils.TritonModelException(
                "auto_complete_config function in model '%s' must return a valid pb.ModelConfig object." % self.name)
        return {"config": json.dumps(config.as_dict())}

    def initialize(self, message):
        module = self.start(message)
        self.model = module.TritonPythonModel()
        if hasattr(self.model, "initialize"):
            self.model.initialize(message["args"])
        return {"has_is_ready": hasattr(self.model, "is_ready")}

    def request(self, wire):
        request = pb_utils.InferenceRequest(
            request_id=wire["id"], correlation_id=wire["correlation_id"],
            inputs=[self.tensor(t, free=False) for t in wire["inputs"]],
            requested_output_names=wire["outputs"], model_name=self.name, flags=wire["flags"],
            timeout=wire["timeout"])
        request._parameters = json.dumps(wire["parameters"])
        request._key = wire.get("key")
        request._sender = pb_utils.InferenceResponseSender(request, self.decoupled)
        return request

    def execute(self, message):
        for segment, offset, length in message.get("free", ()):
            self.arena.free(segment, offset, length)
        requests = [self.request(wire) for wire in message["requests"]]
        try:
            if not hasattr(self.model, "execute"):
                raise pb_utils.TritonModelException("Python model '%s' does not implement `execute` method." % self.name)
            result = self.model.execute(requests)
            if asyncio.iscoroutine(result):
                future = self.run_coroutine(result)
                # A decoupled model's coroutine goes on in the background, as in Triton.
                result = None if self.decoupled else future.result()
            return {"responses": self.collect(requests, result)}
        except BaseException as e:  # noqa: BLE001 - the model's failure is the requests' error
            error = "Failed to process the request(s) for model '%s', message: %s" % (self.name, describe(e))
            self.log("E", error, depth=1)
            if self.decoupled:
                for request in requests:
                    if not request._sender._closed:
                        request._sender._closed = True
                        self.side.send({"op": "send", "key": request._key, "final": True,
                                        "response": {"error": {"code": pb_utils.TritonError.INTERNAL, "message": error}}})
            return {"error": error}
        finally:
            if not self.decoupled:
                for request in requests:
                    request._sender._closed = True

    def collect(self, requests, result):
        if self.decoupled:
            if result is not None:
                raise pb_utils.TritonModelException(
                    "Python model '%s' is using the decoupled mode and the execute function must return None." % self.name)
            return []
        if result is None:
            result = [None] * len(requests)
        if not isinstance(result, list):
            raise pb_utils.TritonModelException("Expected a list in the execute return, found type '%s'." % type(result))
        if len(result) != len(requests):
            raise pb_utils.TritonModelException(
                "Number of InferenceResponse objects do not match the number of InferenceRequest objects. "
                "InferenceRequest(s) size is:%d, and InferenceResponse(s) size is:%d\n" % (len(requests), len(result)))
        encoded = []
        for request, response in zip(requests, result):
            response = response if response is not None else request._sender._response
            if response is None:
                response = pb_utils.InferenceResponse(error=pb_utils.TritonError(
                    "Python model '%s' sent no response for a request" % self.name))
            encoded.append(self.encode(response, request))
        return encoded

    def run_coroutine(self, coroutine):
        """Runs a coroutine on the stub's event loop (a thread of its own, started when needed)."""
        if self.loop is None:
            self.loop = asyncio.new_event_loop()
            threading.Thread(target=self.loop.run_forever, name="nereid-asyncio", daemon=True).start()
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop)

    def finalize(self, _message):
        if self.model is not None and hasattr(self.model, "finalize"):
            self.model.finalize()
        return {}

    # -- BLS -------------------------------------------------------------------------------------
    def bls(self, request, decoupled):
        """Sends a BLS request and yields its responses as they come."""
        wire = {
            "model": request._model_name, "version": request._model_version, "id": request._request_id,
            "correlation_id": request._correlation_id, "flags": request._flags, "timeout": request._timeout,
            "parameters": json.loads(request._parameters), "outputs": request._requested_output_names,
            "inputs": [self.put(t) for t in request._inputs],
        }
        return BlsReplies(self, {"op": "infer", "request": wire, "decoupled": decoupled})

    def response(self, wire):
        if "error" in wire:
            return pb_utils.InferenceResponse(error=pb_utils.TritonError(wire["error"]["message"], wire["error"]["code"]))
        outputs = [self.tensor(t, free=True) for t in wire["outputs"]]
        return pb_utils.InferenceResponse(outputs, parameters=wire.get("parameters"))


class BlsReplies:
    """The replies to one BLS request: responses until the final one."""

    def __init__(self, runtime, message):
        self.runtime = runtime
        self.replies = runtime.side.open(message)
        self.id = message["id"]
        self.done = False

    def __iter__(self):
        return self

    def __next__(self):
        if self.done:
            raise StopIteration
        reply = self.replies.get()
        self.done = reply["final"]
        if self.done:
            self.runtime.side.close(self.id)
        wire = reply.get("response")
        return self.runtime.response(wire) if wire is not None else pb_utils.InferenceResponse()

    def cancel(self):
        if not self.done:
            self.runtime.side.send({"op": "cancel", "request": self.id})


def import_dependencies():
    global np, pb_utils
    import numpy as np
    import triton_python_backend_utils as pb_utils


def main():
    # The server owns the stub's lifetime: the terminal's Ctrl-C is for the server only.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    runtime = Runtime(int(sys.argv[1]), int(sys.argv[2]))
    runtime.side.start()
    handlers = {"auto_complete": runtime.auto_complete, "initialize": runtime.initialize,
                "execute": runtime.execute, "finalize": runtime.finalize}
    try:
        import_dependencies()
        pb_utils._bind(runtime)
    except BaseException as e:  # noqa: BLE001 - every request gets the reason
        broken = "the Python backend stub cannot run in %s: %s" % (sys.executable, describe(e))
        handlers = {op: (lambda _message: {"error": broken}) for op in handlers}
        handlers["finalize"] = runtime.finalize
    while True:
        try:
            message = runtime.control.recv()
        except (EOFError, OSError):
            os._exit(0)
        op = message["op"]
        try:
            reply = handlers[op](message)
        except BaseException as e:  # noqa: BLE001 - reported to the server, which decides
            reply = {"error": describe(e)}
        runtime.control.send(reply)
        if op == "finalize":
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(0)


if __name__ == "__main__":
    main()
