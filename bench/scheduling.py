"""Issue 5's benchmark: the dynamic batcher on a compute-bound model.

Runs, in one go on this machine:
  - the CNN of common.build_cnn (FP32 [3, 64, 64] images, about 0.35 GFLOP each) served by Nereid
    on one instance with max_batch_size 8 and dynamic_batching { max_queue_delay_microseconds: 100 };
  - perf_analyzer at concurrency 16 over gRPC and HTTP, single-image requests: throughput, against
    the same model run in-process by ONNX Runtime at batch 8 back to back (ort_inprocess, the
    library Nereid loads), counted per image. Both run ONNX Runtime on the same number of threads
    (--threads, half the cores by default): the other cores are for perf_analyzer and the
    frontends, which the in-process loop does without; with every core for ONNX Runtime, the
    load generator slows its threads down. In-process on all cores is shown for reference;
  - at concurrency 1, the server's queue time of each request: the statistics extension's
    cumulative queue time, read after every request. With batching on, a lone request waits the
    100 us queue delay for company, then runs alone.
The load generators share the machine's cores with the server. Where cargo is, the script builds
Nereid and ort_inprocess first; $NEREID_BIN and $ORT_INPROCESS_BIN point elsewhere.

    .venv/bin/python bench/scheduling.py [--size 64]
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

import numpy as np

from common import ROOT, Server, build_cnn, median_run, perf_analyzer, table

INPROCESS = Path(os.environ.get("ORT_INPROCESS_BIN", ROOT / "target" / "release" / "examples" / "ort_inprocess"))
CONFIG = """name: "cnn"
platform: "onnxruntime_onnx"
max_batch_size: 8
dynamic_batching {{ max_queue_delay_microseconds: 100 }}
input [ {{ name: "INPUT0" data_type: TYPE_FP32 dims: [ 3, {size}, {size} ] }} ]
output [ {{ name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 10 ] }} ]
instance_group [ {{ kind: KIND_CPU count: 1 }} ]
parameters {{ key: "intra_op_thread_count" value: {{ string_value: "{threads}" }} }}
"""


def inprocess(model, size, threads, seconds=6.0):
    """ONNX Runtime in-process at batch 8 back to back (0 threads: its default, every core);
    returns images per second."""
    def run(iterations):
        cmd = [str(INPROCESS), str(model), f"INPUT0:FP32:8,3,{size},{size}", "--iterations", str(iterations),
               "--threads", str(threads)]
        return json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
    probe = run(10)
    result = run(max(10, int(seconds * probe["infer_per_s"])))
    return {"infer_per_s": 8 * result["infer_per_s"], "p50_us": result["p50_us"], "p99_us": result["p99_us"]}


def queue_times(server, size, requests=2000):
    """Queue time of each request at concurrency 1, in microseconds, from the statistics."""
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(f"127.0.0.1:{server.grpc}")
    image = grpcclient.InferInput("INPUT0", [1, 3, size, size], "FP32")
    image.set_data_from_numpy(np.random.default_rng(0).random((1, 3, size, size), np.float32))

    def queue_ns():
        stats = client.get_inference_statistics("cnn").model_stats[0].inference_stats.queue
        return stats.ns, stats.count

    for _ in range(50):
        client.infer("cnn", [image])
    times = []
    before = queue_ns()
    for _ in range(requests):
        client.infer("cnn", [image])
        after = queue_ns()
        assert after[1] == before[1] + 1
        times.append((after[0] - before[0]) / 1000)
        before = after
    client.close()
    return sorted(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=64, help="image height and width")
    parser.add_argument("--threads", type=int, default=max(1, (os.cpu_count() or 2) // 2),
                        help="ONNX Runtime threads, in the server and in-process")
    args = parser.parse_args()
    if shutil.which("cargo"):
        subprocess.run(["cargo", "build", "--release", "-q", "-p", "nereid", "-p", "nereid-onnxruntime",
                        "--example", "ort_inprocess"], check=True, cwd=ROOT)
    with tempfile.TemporaryDirectory() as repo:
        model = Path(repo) / "cnn" / "1" / "model.onnx"
        build_cnn(model, size=args.size)
        (Path(repo) / "cnn" / "config.pbtxt").write_text(CONFIG.format(size=args.size, threads=args.threads))
        base = inprocess(model, args.size, args.threads)
        every_core = inprocess(model, args.size, 0)
        server = Server(repo)
        try:
            rows, ratios = [], {}
            for protocol, port in (("grpc", server.grpc), ("http", server.http)):
                url = f"127.0.0.1:{port}"
                perf_analyzer("cnn", url, protocol, 16, window_ms=3000)  # warm up
                r = median_run(lambda: perf_analyzer("cnn", url, protocol, 16, window_ms=3000), key="infer_per_s")
                ratios[protocol] = r["infer_per_s"] / base["infer_per_s"]
                rows.append([f"perf_analyzer {protocol}, batched by Nereid", 16, f"{r['infer_per_s']:.1f}",
                             f"{r['p50_us'] / 1000:.1f}", f"{ratios[protocol]:.3f}"])
            rows.append([f"in-process ORT, batch 8, {args.threads} threads", "-", f"{base['infer_per_s']:.1f}",
                         f"{base['p50_us'] / 1000:.1f} (per batch)", "1.000"])
            rows.append([f"in-process ORT, batch 8, every core ({os.cpu_count()})", "-",
                         f"{every_core['infer_per_s']:.1f}", f"{every_core['p50_us'] / 1000:.1f} (per batch)",
                         f"{every_core['infer_per_s'] / base['infer_per_s']:.3f}"])
            c1 = perf_analyzer("cnn", f"127.0.0.1:{server.grpc}", "grpc", 1)
            queue = queue_times(server, args.size)
            with urllib.request.urlopen(f"http://127.0.0.1:{server.http}/v2/models/cnn/stats") as r:
                stats = json.loads(r.read())["model_stats"][0]
        finally:
            server.stop()
    print(table(["path", "concurrency", "images/s", "p50 ms", "x in-process"], rows))
    print()
    sizes = {b["batch_size"]: b["compute_infer"]["count"] for b in stats["batch_stats"]}
    print(f"executions by batch size over the run: {dict(sorted(sizes.items()))}")
    pct = lambda p: queue[round((len(queue) - 1) * p)]
    print(f"queue time at concurrency 1 ({len(queue)} requests): p50 {pct(0.5):.0f} us, p99 {pct(0.99):.0f} us, "
          f"mean {statistics.mean(queue):.0f} us (target p50 < 150 us; the batcher waits 100 us for company)")
    print(f"perf_analyzer at concurrency 1 (gRPC): {c1['infer_per_s']:.1f} images/s, p50 {c1['p50_us'] / 1000:.2f} ms")
    for protocol, ratio in ratios.items():
        print(f"throughput at concurrency 16 over {protocol}: {100 * ratio:.1f}% of in-process batch 8 on as many "
              f"threads ({args.threads}; target >= 90%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
