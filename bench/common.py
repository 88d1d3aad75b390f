"""Shared pieces of the benchmark scripts: starting Nereid, running perf_analyzer, printing tables."""

import csv
import os
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PERF_ANALYZER = os.environ.get("PERF_ANALYZER", str(ROOT.parent / "shared" / "tools" / "perf_analyzer"))
NEREID = os.environ.get("NEREID_BIN", str(ROOT / "target" / "release" / "nereid"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid):
    """Resident memory of a process in MiB (ps works on Linux and macOS)."""
    out = subprocess.run(["ps", "-o", "rss=", "-p", str(pid)], capture_output=True, text=True).stdout
    return int(out.strip()) / 1024


class Server:
    """A Nereid process on free ports; `startup_s` is spawn-to-ready time."""

    def __init__(self, repository, *args):
        self.http, self.grpc, self.metrics = free_port(), free_port(), free_port()
        cmd = [NEREID, "--model-repository", str(repository), f"--http-port={self.http}",
               f"--grpc-port={self.grpc}", f"--metrics-port={self.metrics}", "--log-info=false", *args]
        start = time.perf_counter()
        self.proc = subprocess.Popen(cmd)
        url = f"http://127.0.0.1:{self.http}/v2/health/ready"
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nereid exited with {self.proc.returncode}")
            try:
                with urllib.request.urlopen(url, timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.perf_counter() - start > 30:
                raise RuntimeError("nereid did not become ready in 30 s")
            time.sleep(0.005)
        self.startup_s = time.perf_counter() - start

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=60)


def perf_analyzer(model, url, protocol, concurrency, *extra, window_ms=2000):
    """Runs perf_analyzer at one concurrency; returns infer/s, p50 and p99 in microseconds."""
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "pa.csv"
        cmd = [PERF_ANALYZER, "-m", model, "-u", url, "-i", protocol, "--concurrency-range", str(concurrency),
               "-p", str(window_ms), "--max-trials", "20", "-s", "25", "-f", str(out), *extra]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"perf_analyzer failed: {r.stdout[-2000:]} {r.stderr[-2000:]}")
        row = next(csv.DictReader(out.open()))
        return {
            "infer_per_s": float(row["Inferences/Second"]),
            "p50_us": float(row["p50 latency"]),
            "p99_us": float(row["p99 latency"]),
        }


def median_run(run, times=3, key="p50_us"):
    """The run with the median `key` of several: one noisy window on a shared machine moves a p50 a lot."""
    results = sorted((run() for _ in range(times)), key=lambda r: r[key])
    return results[len(results) // 2]


class Nginx:
    """Debian's nginx answering every request with a fixed body: the loopback limit."""

    def __init__(self, body):
        self.port = free_port()
        self.dir = tempfile.TemporaryDirectory()
        d = Path(self.dir.name)
        (d / "body").write_bytes(body)
        (d / "nginx.conf").write_text(f"""
worker_processes 1;
daemon off;
error_log {d}/error.log;
pid {d}/nginx.pid;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  client_body_temp_path {d};
  client_max_body_size 0;
  server {{
    listen 127.0.0.1:{self.port};
    location / {{ default_type application/json; root {d}; try_files /body =404; error_page 405 =200 $uri; }}
    # The same, but the request body is read (in memory) before the answer: for bodies of many MB, which
    # "/" answers before they are sent, stalling wrk. Reading costs a subrequest, so "/" stays the default.
    location /read/ {{
      default_type application/json; root {d}; try_files /body =404; error_page 405 =200 $uri;
      client_body_buffer_size 64m; mirror /mirror;
    }}
    location = /mirror {{ internal; return 204; }}
  }}
}}
""")
        self.proc = subprocess.Popen(["nginx", "-p", str(d), "-c", str(d / "nginx.conf")])
        deadline = time.time() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if time.time() > deadline:
                    raise RuntimeError("nginx did not start")
                time.sleep(0.05)

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=10)
        self.dir.cleanup()


def wrk(url, concurrency, body=None, duration_s=3, timeout_s=None):
    """wrk's throughput and latency for POSTing `body` (GET without); p50/p99 in microseconds.
    `timeout_s` raises wrk's 2 s request timeout, for requests that legitimately take longer."""
    with tempfile.TemporaryDirectory() as d:
        args = ["wrk", f"-t{min(concurrency, 2)}", f"-c{concurrency}", f"-d{duration_s}s", "--latency"]
        if timeout_s:
            args.append(f"--timeout={timeout_s}s")
        if body is not None:
            (Path(d) / "body").write_bytes(body)
            script = Path(d) / "post.lua"
            script.write_text('wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
                              f'local f = io.open("{d}/body", "rb")\nwrk.body = f:read("*a")\nf:close()\n')
            args += ["-s", str(script)]
        out = subprocess.run(args + [url], check=True, capture_output=True, text=True).stdout
    def micros(text):
        value, unit = float(text[:-2] if text[-2:] in ("us", "ms") else text[:-1]), text[-2:]
        return value * {"us": 1, "ms": 1000}.get(unit, 1e6)
    latency = {line.split()[0]: micros(line.split()[1]) for line in out.splitlines() if line.strip().startswith(("50%", "99%"))}
    rps = next(float(line.split()[1]) for line in out.splitlines() if line.startswith("Requests/sec"))
    non2xx = [line for line in out.splitlines() if "Non-2xx" in line]
    if non2xx:
        raise RuntimeError(f"wrk got errors from {url}: {non2xx[0]}")
    return {"infer_per_s": rps, "p50_us": latency["50%"], "p99_us": latency["99%"]}


def table(headers, rows):
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) for i, h in enumerate(headers)]
    line = lambda cells: "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"
    return "\n".join([line(headers), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows)])


def build_cnn(path, channels=32, size=64, classes=10, seed=0):
    """Writes a small ResNet-style CNN with fixed random weights to `path`: a compute-bound model.

    FP32 INPUT0 [batch, 3, size, size] -> OUTPUT0 [batch, classes]: a 3x3 stem, one residual block,
    a stride-2 convolution to twice the channels, another residual block, global average pooling and
    a dense layer (about 0.35 GFLOP per image at the defaults).
    """
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    nodes, weights = [], []

    def conv(x, cin, cout, stride=1, relu=True):
        name = f"conv{len(weights)}"
        w = rng.normal(0, (2 / (9 * cin)) ** 0.5, (cout, cin, 3, 3)).astype(np.float32)
        weights.extend([numpy_helper.from_array(w, f"{name}.w"), numpy_helper.from_array(np.zeros(cout, np.float32), f"{name}.b")])
        nodes.append(helper.make_node("Conv", [x, f"{name}.w", f"{name}.b"], [name], pads=[1, 1, 1, 1], strides=[stride, stride]))
        if not relu:
            return name
        nodes.append(helper.make_node("Relu", [name], [f"{name}.relu"]))
        return f"{name}.relu"

    def block(x, c):
        y = conv(conv(x, c, c), c, c, relu=False)
        nodes.append(helper.make_node("Add", [x, y], [f"{y}.sum"]))
        nodes.append(helper.make_node("Relu", [f"{y}.sum"], [f"{y}.out"]))
        return f"{y}.out"

    x = block(conv("INPUT0", 3, channels), channels)
    x = block(conv(x, channels, 2 * channels, stride=2), 2 * channels)
    dense = rng.normal(0, (1 / (2 * channels)) ** 0.5, (2 * channels, classes)).astype(np.float32)
    weights.append(numpy_helper.from_array(dense, "dense.w"))
    nodes += [helper.make_node("GlobalAveragePool", [x], ["pooled"]), helper.make_node("Flatten", ["pooled"], ["flat"]),
              helper.make_node("MatMul", ["flat", "dense.w"], ["OUTPUT0"])]
    graph = helper.make_graph(nodes, "cnn", [helper.make_tensor_value_info("INPUT0", TensorProto.FLOAT, ["batch", 3, size, size])],
                              [helper.make_tensor_value_info("OUTPUT0", TensorProto.FLOAT, ["batch", classes])], weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15)], ir_version=8)
    onnx.checker.check_model(model, full_check=True)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
