"""Issue 6's benchmark: a 64 MB FP32 input and a 64 MB output through system shared memory,
against the same tensors sent in the body with the binary HTTP extension and with gRPC.

One Nereid process serves the `simple_identity` example model (OUTPUT0 = INPUT0, FP32 [-1],
batched) from a temporary repository; perf_analyzer sends [1, 16000000] FP32 tensors (64,000,000
bytes, under the 64 MiB HTTP body limit) one request at a time over each transport. With
`--shared-memory system` perf_analyzer writes the input into a region once and has the output
written into another; the other two carry both tensors in every request and response.

    .venv/bin/python bench/shared_memory.py
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

from common import ROOT, Server, median_run, perf_analyzer, table

sys.path.insert(0, str(ROOT / "examples"))
import make_models  # noqa: E402

ELEMENTS = 16_000_000
BYTES = ELEMENTS * 4
MODEL = "simple_identity"


def server_stats(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/models/{MODEL}/stats") as r:
        return json.load(r)["model_stats"][0]["inference_stats"]


def server_ms_per_request(before, after):
    """The server's own time per request (queue and compute), from its statistics: what is left
    of a request's latency once its data has arrived."""
    count = after["success"]["count"] - before["success"]["count"]
    phases = ("queue", "compute_input", "compute_infer", "compute_output")
    return sum(after[p]["ns"] - before[p]["ns"] for p in phases) / max(count, 1) / 1e6


def main():
    if "NEREID_BIN" not in os.environ:
        subprocess.run(["cargo", "build", "--release", "-q", "-p", "nereid"], check=True, cwd=ROOT)
    source = ROOT / "examples" / "model_repository" / MODEL
    if not (source / "1" / "model.onnx").exists():
        make_models.make_repository(names=[MODEL])
    with tempfile.TemporaryDirectory() as repo:
        shutil.copytree(source, Path(repo) / MODEL)
        server = Server(repo, "--allow-client-shm=true")
        try:
            shape = ["--shape", f"INPUT0:{ELEMENTS}", "-b", "1"]
            shm = ["--shared-memory", "system", "--output-shared-memory-size", str(BYTES)]
            runs = {
                "system shared memory (HTTP)": (f"127.0.0.1:{server.http}", "http", shape + shm),
                "system shared memory (gRPC)": (f"127.0.0.1:{server.grpc}", "grpc", shape + shm),
                "binary HTTP": (f"127.0.0.1:{server.http}", "http", shape),
                "gRPC": (f"127.0.0.1:{server.grpc}", "grpc", shape),
            }
            results = {}
            for name, (url, protocol, extra) in runs.items():
                before = server_stats(server.http)
                results[name] = median_run(lambda: perf_analyzer(MODEL, url, protocol, 1, *extra, "-s", "50"))
                results[name]["server_ms"] = server_ms_per_request(before, server_stats(server.http))
        finally:
            server.stop()
    shm_ms = results["system shared memory (HTTP)"]["p50_us"] / 1000
    # What moving the tensors costs: a request's latency less the server's own time for it.
    moving = {name: r["p50_us"] / 1000 - r["server_ms"] for name, r in results.items()}
    rows = [
        (name, f"{r['p50_us'] / 1000:.1f}", f"{r['p99_us'] / 1000:.1f}", f"{r['infer_per_s']:.1f}",
         f"{r['server_ms']:.1f}", f"{moving[name]:.1f}", f"{r['p50_us'] / 1000 / shm_ms:.1f}x")
        for name, r in results.items()
    ]
    print(f"\n{MODEL}, FP32 [1, {ELEMENTS}] in and out ({BYTES / 1e6:.0f} MB each way), concurrency 1:\n")
    headers = ["transport", "p50 ms", "p99 ms", "infer/s", "server ms/request", "p50 - server ms",
               "p50 / shared memory (HTTP)"]
    print(table(headers, rows))
    shm, http = "system shared memory (HTTP)", "binary HTTP"
    ratio = results[http]["p50_us"] / results[shm]["p50_us"]
    print(f"\nshared memory is {ratio:.1f}x faster per request than binary HTTP (target: at least 5x); "
          f"moving the tensors costs {moving[http] / max(moving[shm], 0.1):.1f}x less")


if __name__ == "__main__":
    main()
