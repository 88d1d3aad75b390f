"""Issue 3's GPU check: the CUDA execution provider really executing in Nereid, by ONNX Runtime's
own report, and what it buys on the CNN of bench/common.py.

Needs an NVIDIA GPU and ONNX Runtime's GPU build (ORT_DYLIB_PATH, with the CUDA libraries it
links on the library path). Serves the CNN as `cnn_gpu` (KIND_GPU), `cnn_cpu` (KIND_CPU),
`cnn_auto` (no instance_group: KIND_AUTO) and, with the TensorRT accelerator, `cnn_trt` and
`cnn_trt_fallback` (`cpu_fallback`), with --log-verbose=2 so ONNX Runtime's node placement report
reaches the log. Prints the repository index, ONNX Runtime's placements, the GPU and CPU outputs'
difference, and sequential batch-8 latencies over HTTP.

    NEREID_BIN=... ORT_DYLIB_PATH=.../libonnxruntime.so.1.31.1 python3 bench/onnxruntime_gpu.py
"""

import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

from common import NEREID, build_cnn, free_port

CONFIG = """name: "{name}" backend: "onnxruntime" max_batch_size: 8
input [ {{ name: "INPUT0" data_type: TYPE_FP32 dims: [ 3, 64, 64 ] }} ]
output [ {{ name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 10 ] }} ]
{extra}
"""
TENSORRT = 'optimization { execution_accelerators { gpu_execution_accelerator: [ { name: "tensorrt" } ] } }'
MODELS = {
    "cnn_gpu": "instance_group [ { count: 1 kind: KIND_GPU } ]",
    "cnn_cpu": "instance_group [ { count: 1 kind: KIND_CPU } ]",
    "cnn_auto": "",
    "cnn_trt": TENSORRT,
    "cnn_trt_fallback": TENSORRT + ' parameters { key: "cpu_fallback" value: { string_value: "true" } }',
}


def infer(port, model, x):
    """One binary-tensor HTTP request; returns (output, seconds)."""
    header = json.dumps({"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": list(x.shape),
                                     "parameters": {"binary_data_size": x.nbytes}}],
                         "outputs": [{"name": "OUTPUT0", "parameters": {"binary_data": True}}]}).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}/v2/models/{model}/infer", header + x.tobytes(),
                                     {"Inference-Header-Content-Length": str(len(header))})
    start = time.perf_counter()
    with urllib.request.urlopen(request) as r:
        body, length = r.read(), int(r.headers["Inference-Header-Content-Length"])
    took = time.perf_counter() - start
    return np.frombuffer(body[length:], dtype=np.float32).reshape(x.shape[0], 10), took


def get(port, path, body=None):
    with urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{port}{path}", body)) as r:
        return json.loads(r.read())


def main():
    with tempfile.TemporaryDirectory() as tmp:
        repo, log = Path(tmp) / "models", Path(tmp) / "server.log"
        for name, extra in MODELS.items():
            build_cnn(repo / name / "1" / "model.onnx")
            (repo / name / "config.pbtxt").write_text(CONFIG.format(name=name, extra=extra))
        port = free_port()
        server = subprocess.Popen([NEREID, "--model-repository", str(repo), f"--http-port={port}",
                                   f"--grpc-port={free_port()}", f"--metrics-port={free_port()}",
                                   "--exit-on-error=false", "--log-verbose=2", f"--log-file={log}"])
        try:
            deadline = time.time() + 240
            while True:
                try:
                    index = get(port, "/v2/repository/index", b"{}")
                    if len(index) == len(MODELS) and all(m.get("state") in ("READY", "UNAVAILABLE") for m in index):
                        break
                except OSError:
                    pass
                if time.time() > deadline or server.poll() is not None:
                    raise RuntimeError("models did not finish loading")
                time.sleep(0.5)
            print("repository index:")
            for m in index:
                print(f"  {m['name']}: {m['state']} {m.get('reason', '')[:600]}")
            kinds = {g["kind"] for g in get(port, "/v2/models/cnn_auto/config")["instance_group"]}
            print(f"cnn_auto (KIND_AUTO) became {sorted(kinds)}")
            text = log.read_text(errors="replace")
            print("\nNereid's sessions and ONNX Runtime's node placements (verbose log):")
            for line in text.splitlines():
                if re.search(r"session with|placed on", line):
                    print("  " + line.split("] ", 1)[-1][:300])
            ready = {m["name"] for m in index if m["state"] == "READY"}
            if "cnn_gpu" not in ready:
                return 1
            print(subprocess.run(["nvidia-smi", "--query-compute-apps=pid,process_name,used_memory", "--format=csv"],
                                 capture_output=True, text=True).stdout)
            x = np.random.default_rng(0).normal(size=(8, 3, 64, 64)).astype(np.float32)
            gpu, _ = infer(port, "cnn_gpu", x)
            cpu, _ = infer(port, "cnn_cpu", x)
            print(f"batch 8: max |GPU - CPU| = {np.abs(gpu - cpu).max():.2e} (outputs up to {np.abs(cpu).max():.2f})")
            for model in ("cnn_gpu", "cnn_cpu", "cnn_trt_fallback"):
                if model not in ready:
                    continue
                times = [infer(port, model, x)[1] for _ in range(60)][10:]
                print(f"{model}: batch 8 over HTTP, p50 {statistics.median(times) * 1e3:.2f} ms, "
                      f"{8 / statistics.mean(times):.0f} images/s (sequential)")
            stats = get(port, "/v2/models/cnn_gpu/stats")["model_stats"][0]["inference_stats"]["compute_infer"]
            print(f"cnn_gpu compute_infer: {stats['ns'] / stats['count'] / 1e6:.3f} ms per execution")
        finally:
            server.terminate()
            server.wait(timeout=60)


if __name__ == "__main__":
    sys.exit(main())
