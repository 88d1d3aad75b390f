"""Issue 2's benchmark: Nereid's overhead on the add/sub model against in-process ONNX Runtime.

Runs, in one go on this machine: Nereid on the example repository (start-to-ready time and
resident memory); perf_analyzer over HTTP and gRPC at concurrency 1, 4 and 16 on `simple`; the
same model run in-process by ONNX Runtime with the same inputs (the compute limit); and, as the
loopback limit, wrk POSTing the same JSON request to Nereid and to nginx answering with the same
response body. The load generators share the machine's two cores with the server.

    .venv/bin/python bench/core_overhead.py
"""

import json
import subprocess
import sys
import urllib.request

from common import ROOT, Nginx, Server, median_run, perf_analyzer, rss_mb, table, wrk

REPO = ROOT / "examples" / "model_repository"
INPROCESS = ROOT / "target" / "release" / "examples" / "ort_inprocess"
REQUEST = json.dumps({"inputs": [
    {"name": "INPUT0", "datatype": "INT32", "shape": [1, 16], "data": list(range(16))},
    {"name": "INPUT1", "datatype": "INT32", "shape": [1, 16], "data": [1] * 16},
]}).encode()


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
        base = median_run(inprocess)
        rows, overhead = [], {}
        for protocol, port in (("http", server.http), ("grpc", server.grpc)):
            for c in (1, 4, 16):
                run = lambda: perf_analyzer("simple", f"127.0.0.1:{port}", protocol, c)
                r = median_run(run) if c == 1 else run()
                rows.append([f"perf_analyzer {protocol}", c, f"{r['infer_per_s']:.0f}", f"{r['p50_us']:.0f}",
                             f"{r['p99_us']:.0f}", f"{r['infer_per_s'] / base['infer_per_s']:.2f}"])
                if c == 1:
                    overhead[protocol] = r["p50_us"] - base["p50_us"]
        rows.append(["in-process ORT", 1, f"{base['infer_per_s']:.0f}", f"{base['p50_us']:.1f}",
                     f"{base['p99_us']:.1f}", "1.00"])
        print(table(["path", "concurrency", "infer/s", "p50 us", "p99 us", "x in-process"], rows))

        infer_url = f"http://127.0.0.1:{server.http}/v2/models/simple/infer"
        with urllib.request.urlopen(urllib.request.Request(infer_url, REQUEST)) as r:
            response = r.read()
        nginx = Nginx(response)
        try:
            rows = []
            for c in (1, 4, 16):
                ours = wrk(infer_url, c, REQUEST)
                limit = wrk(f"http://127.0.0.1:{nginx.port}/", c, REQUEST)
                rows.append([c, f"{ours['infer_per_s']:.0f}", f"{limit['infer_per_s']:.0f}",
                             f"{ours['infer_per_s'] / limit['infer_per_s']:.2f}", f"{ours['p50_us']:.0f}",
                             f"{limit['p50_us']:.0f}"])
                if c == 1:
                    loopback = ours["p50_us"] - limit["p50_us"] - base["p50_us"]
        finally:
            nginx.stop()
        print()
        print(f"wrk, JSON request of {len(REQUEST)} bytes; nginx answers with Nereid's {len(response)}-byte response:")
        print(table(["concurrency", "nereid req/s", "nginx req/s", "ratio", "nereid p50 us", "nginx p50 us"], rows))
        print()
        for protocol, us in overhead.items():
            print(f"overhead {protocol}: {us:.0f} us (perf_analyzer p50 at concurrency 1 minus in-process p50; target <= 60)")
        print(f"overhead beyond the loopback limit: {loopback:.0f} us (wrk p50 minus nginx p50 minus in-process p50)")
        print(f"start to ready: {startup_ms:.0f} ms (target < 1000)")
        print(f"resident memory with the example repository loaded: {memory:.1f} MiB (target < 50)")
        print(f"resident memory after the load tests: {rss_mb(server.proc.pid):.1f} MiB")
    finally:
        server.stop()


if __name__ == "__main__":
    sys.exit(main())
