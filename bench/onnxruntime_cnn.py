"""Issue 3's benchmark: a compute-bound CNN through Nereid against in-process ONNX Runtime.

Builds the ResNet-style CNN of bench/common.py at 96x96 with 48 channels (random weights; FP32
[batch, 3, 96, 96] -> [batch, 10], about 1.8 GFLOP per image, so that compute, not transport,
decides) and serves it with Nereid: one instance, `intra_op_thread_count` = --threads. At each
batch size it measures perf_analyzer's throughput over gRPC and HTTP at concurrency 1 (a lone
client: each round trip leaves the instance idle) and 2 (a request waits while one runs: the
server's throughput), and the same model run back to back in-process by ONNX Runtime
(backends/onnxruntime/examples/ort_inprocess: the library the server loads, the same threads and
batch), alternating them --trials times and keeping medians. Target: Nereid at >= 95% of
in-process. For Nereid, "ms per ORT run" is the compute_infer time of its statistics: the session
run inside the server, which tells execution from transport. perf_analyzer shares the machine's
cores with the server.

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
import urllib.request
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
    """(images per second, ms per run) of back-to-back runs, for about `seconds`."""
    def run(iterations):
        cmd = [str(INPROCESS), str(model), f"INPUT0:FP32:{batch},3,{SIZE},{SIZE}", "--threads", str(threads),
               "--iterations", str(iterations)]
        return json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
    per_run_s = run(10)["p50_us"] / 1e6
    runs_per_s = run(max(10, int(seconds / per_run_s)))["infer_per_s"]
    return runs_per_s * batch, 1e3 / runs_per_s


def compute(server):
    """(ns, count) of ONNX Runtime's runs inside the server so far: its compute_infer statistics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{server.http}/v2/models/cnn/stats") as r:
        infer = json.loads(r.read())["model_stats"][0]["inference_stats"]["compute_infer"]
    return infer["ns"], infer["count"]


def nereid(server, protocol, batch, concurrency):
    """(images per second through perf_analyzer, ms per ONNX Runtime run inside the server)."""
    before = compute(server)
    port = server.grpc if protocol == "grpc" else server.http
    r = perf_analyzer("cnn", f"127.0.0.1:{port}", protocol, concurrency, "-b", str(batch), window_ms=3000)
    after = compute(server)
    return r["infer_per_s"], (after[0] - before[0]) / (after[1] - before[1]) / 1e6


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
                runs = {"in-process ORT": []}
                for _ in range(args.trials):
                    runs["in-process ORT"].append(inprocess(model, batch, args.threads))
                    for protocol in ("grpc", "http"):
                        for c in (1, 2):
                            path = f"nereid {protocol} c={c}"
                            runs.setdefault(path, []).append(nereid(server, protocol, batch, c))
                base = statistics.median(r[0] for r in runs["in-process ORT"])
                for path, results in runs.items():
                    rate = statistics.median(r[0] for r in results)
                    run_ms = statistics.median(r[1] for r in results)
                    worst = min(worst, rate / base)
                    rows.append([batch, args.threads, path, f"{rate:.1f}", f"{rate / base:.3f}", f"{run_ms:.2f}"])
            print(table(["batch", "threads", "path", "images/s (median)", "x in-process", "ms per ORT run"], rows))
            print(f"\nlowest ratio: {worst:.3f} (target >= 0.95)")
        finally:
            server.stop()


if __name__ == "__main__":
    sys.exit(main())
