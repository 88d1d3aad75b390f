"""Issue 3's benchmark: a compute-bound CNN through Nereid against in-process ONNX Runtime.

Builds the ResNet-style CNN of bench/common.py at 96x96 with 48 channels (random weights; FP32
[batch, 3, 96, 96] -> [batch, 10], about 1.8 GFLOP per image, so that compute, not transport,
decides) into a temporary repository and serves it with Nereid:
one instance, `intra_op_thread_count` = --threads. At each batch size it measures perf_analyzer's
throughput (concurrency 1, gRPC and HTTP) and the same model run back to back in-process by
ONNX Runtime (backends/onnxruntime/examples/ort_inprocess: the library the server loads, the same
threads and batch), alternating them three times and keeping each one's median. Target: Nereid
at >= 95% of in-process. perf_analyzer shares the machine's cores with the server.

    .venv/bin/python bench/onnxruntime_cnn.py [--threads 1] [--batches 1,8] [--no-build]

--no-build uses the binaries as they are: NEREID_BIN and ORT_INPROCESS_BIN name them elsewhere.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from common import ROOT, Server, build_cnn, perf_analyzer, table

SIZE, CHANNELS = 96, 48
INPROCESS = Path(os.environ.get("ORT_INPROCESS_BIN", ROOT / "target" / "release" / "examples" / "ort_inprocess"))
CONFIG = """name: "cnn" backend: "onnxruntime" max_batch_size: 8
input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ 3, %(size)d, %(size)d ] } ]
output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 10 ] } ]
instance_group [ { count: 1 kind: KIND_CPU } ]
parameters { key: "intra_op_thread_count" value: { string_value: "%(threads)d" } }
"""


def inprocess(model, batch, threads, seconds=6.0):
    """Inferences (images) per second of back-to-back runs, for about `seconds`."""
    def run(iterations):
        cmd = [str(INPROCESS), str(model), f"INPUT0:FP32:{batch},3,{SIZE},{SIZE}", "--threads", str(threads),
               "--iterations", str(iterations)]
        return json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
    per_run_s = run(10)["p50_us"] / 1e6
    return run(max(10, int(seconds / per_run_s)))["infer_per_s"] * batch


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads, both sides")
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--no-build", action="store_true")
    args = parser.parse_args()
    if not args.no_build:
        subprocess.run(["cargo", "build", "--release", "-q", "-p", "nereid", "-p", "nereid-onnxruntime",
                        "--example", "ort_inprocess"], check=True, cwd=ROOT)
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp)
        model = repo / "cnn" / "1" / "model.onnx"
        build_cnn(model, channels=CHANNELS, size=SIZE)
        (repo / "cnn" / "config.pbtxt").write_text(CONFIG % {"size": SIZE, "threads": args.threads})
        server = Server(repo)
        try:
            rows, worst = [], 1.0
            for batch in map(int, args.batches.split(",")):
                runs = {"in-process": [], "grpc": [], "http": []}
                for _ in range(args.trials):
                    runs["in-process"].append(inprocess(model, batch, args.threads))
                    for protocol, port in (("grpc", server.grpc), ("http", server.http)):
                        r = perf_analyzer("cnn", f"127.0.0.1:{port}", protocol, 1, "-b", str(batch), window_ms=3000)
                        runs[protocol].append(r["infer_per_s"])
                base = statistics.median(runs["in-process"])
                rows.append([batch, args.threads, "in-process ORT", f"{base:.1f}", "1.000"])
                for protocol in ("grpc", "http"):
                    ours = statistics.median(runs[protocol])
                    worst = min(worst, ours / base)
                    rows.append([batch, args.threads, f"nereid {protocol}", f"{ours:.1f}", f"{ours / base:.3f}"])
            print(table(["batch", "threads", "path", "images/s (median)", "x in-process"], rows))
            print(f"\nlowest ratio: {worst:.3f} (target >= 0.95)")
        finally:
            server.stop()


if __name__ == "__main__":
    sys.exit(main())
