"""Issue 2's benchmark: Nereid's overhead on the add/sub model against in-process ONNX Runtime.

Runs, in one go on this machine: Nereid on the example repository (start-to-ready time and
resident memory), perf_analyzer over HTTP and gRPC at concurrency 1, 4 and 16 on `simple`, and
the same model run in-process by ONNX Runtime with the same inputs (the compute limit).
Prints infer/s, p50 and p99 and the ratios. The load generator shares the machine's cores.

    .venv/bin/python bench/core_overhead.py
"""

import json
import subprocess
import sys

from common import ROOT, Server, perf_analyzer, rss_mb, table

REPO = ROOT / "examples" / "model_repository"
INPROCESS = ROOT / "target" / "release" / "examples" / "ort_inprocess"


def inprocess(iterations=20000):
    """The add/sub model run back to back in-process (same batch-1 INT32 [1,16] inputs)."""
    cmd = [str(INPROCESS), str(REPO / "simple" / "1" / "model.onnx"), "INPUT0:INT32:1,16", "INPUT1:INT32:1,16",
           "--iterations", str(iterations)]
    return json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)


def main():
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "nereid", "-p", "nereid-onnxruntime",
                    "--example", "ort_inprocess"], check=True, cwd=ROOT)
    server = Server(REPO)
    try:
        startup_ms = server.startup_s * 1000
        memory = rss_mb(server.proc.pid)
        base = inprocess()
        rows, overhead = [], {}
        for protocol, port in (("http", server.http), ("grpc", server.grpc)):
            for c in (1, 4, 16):
                r = perf_analyzer("simple", f"127.0.0.1:{port}", protocol, c)
                rows.append([protocol, c, f"{r['infer_per_s']:.0f}", f"{r['p50_us']:.0f}", f"{r['p99_us']:.0f}",
                             f"{r['infer_per_s'] / base['infer_per_s']:.2f}"])
                if c == 1:
                    overhead[protocol] = r["p50_us"] - base["p50_us"]
        rows.append(["in-process", 1, f"{base['infer_per_s']:.0f}", f"{base['p50_us']:.1f}", f"{base['p99_us']:.1f}", "1.00"])
        print(table(["path", "concurrency", "infer/s", "p50 us", "p99 us", "x in-process"], rows))
        print()
        for protocol, us in overhead.items():
            print(f"server-side overhead {protocol}: {us:.0f} us (p50 at concurrency 1 minus in-process p50; target <= 60)")
        print(f"start to ready: {startup_ms:.0f} ms (target < 1000)")
        print(f"resident memory with the example repository loaded: {memory:.1f} MiB (target < 50)")
        print(f"resident memory after the load test: {rss_mb(server.proc.pid):.1f} MiB")
    finally:
        server.stop()


if __name__ == "__main__":
    sys.exit(main())
