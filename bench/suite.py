"""Issue 9's benchmark suite: Nereid against its peers and against the limits, on one machine, in one run.

For each workload below, at concurrency 1, 4, 16 and 64:
  - Nereid (and Triton, with --triton-url) through perf_analyzer: Triton's protocol over HTTP and
    gRPC, binary tensors;
  - Nereid, MLServer (bench/mlserver_runtime: the same ONNX files through ONNX Runtime) and Triton
    through wrk POSTing one KServe v2 JSON request, the protocol every peer speaks;
and the limits: the model run in-process by ONNX Runtime on the same inputs (compute limit), and
nginx answering the same JSON request with the same response body (loopback limit). Figures go to
bench/results/results.json, and bench/report.py writes results.md and results.png from them. The
load generators run on the same machine, sharing its cores with the server they measure.

    scripts/bench [--quick] [--workloads simple,cnn] [--triton-url localhost:8000]

Triton is not started by the suite: run `scripts/bench --prepare` to write the model repository
(bench/results/tmp/repository), serve it with tritonserver, then pass --triton-url.
"""

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from common import ROOT, Nginx, Server, build_cnn, free_port, perf_analyzer, wrk

import report

RESULTS = ROOT / "bench" / "results"
WORK = RESULTS / "tmp"
REPOSITORY = WORK / "repository"
EXAMPLES = ROOT / "examples" / "model_repository"
INPROCESS = Path(os.environ.get("ORT_INPROCESS_BIN", ROOT / "target" / "release" / "examples" / "ort_inprocess"))
RUNTIMES = ROOT / "bench" / "mlserver_runtime"
CONCURRENCY = (1, 4, 16, 64)

CNN_CONFIG = """platform: "onnxruntime_onnx"
max_batch_size: 8
input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ 3, 64, 64 ] } ]
output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 10 ] } ]
"""
# Both servers wait at most 500 us for a batch to fill (Triton's max_queue_delay, MLServer's max_batch_time).
DYNAMIC_BATCHING = "dynamic_batching { max_queue_delay_microseconds: 500 }\n"
PYTHON_CONFIG = """backend: "python"
max_batch_size: 8
input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ -1 ] } ]
output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ -1 ] } ]
"""
PYTHON_IDENTITY = """import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        return [pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT0", r.inputs()[0].as_numpy())]) for r in requests]
"""


@dataclass
class Workload:
    name: str  # the model's name on every peer
    title: str
    inputs: list  # (name, datatype, shape of one request)
    onnx: str  # the ONNX model the compute limit and MLServer run (repository-relative)
    mlserver: dict = field(default_factory=lambda: {"implementation": "runtimes.OnnxRuntime"})
    batch: int = 1  # requests per in-process run: the largest batch dynamic batching forms
    json_concurrency: tuple = CONCURRENCY
    duration_s: int = 5  # of each wrk run
    window_ms: int = 1500  # perf_analyzer's measurement window
    timeout_s: int = 10  # wrk's per-request timeout

    def request(self):
        """The KServe v2 JSON body every peer gets (INT32 counting up, FP32 0.5: short in JSON)."""
        def data(datatype, n):
            return [i % 128 for i in range(n)] if datatype == "INT32" else [0.5] * n
        return json.dumps({"inputs": [{"name": n, "datatype": t, "shape": s, "data": data(t, size(s))}
                                      for n, t, s in self.inputs]}).encode()

    def perf_analyzer_args(self):
        return [a for n, _, s in self.inputs for a in ("--shape", f"{n}:{','.join(map(str, s[1:]))}")]

    def inprocess_args(self):
        return [str(REPOSITORY / self.onnx), *(f"{n}:{t}:{','.join(map(str, [self.batch, *s[1:]]))}" for n, t, s in self.inputs)]


def size(shape):
    n = 1
    for d in shape:
        n *= d
    return n


MIB16 = 4 * 1024 * 1024  # FP32 values in 16 MiB
WORKLOADS = [
    Workload("simple", "add/sub, INT32 [1,16] x2 (overhead)",
             [("INPUT0", "INT32", [1, 16]), ("INPUT1", "INT32", [1, 16])], "simple/1/model.onnx"),
    Workload("cnn", "CNN, batch 1 (compute)", [("INPUT0", "FP32", [1, 3, 64, 64])], "cnn/1/model.onnx"),
    Workload("cnn_dynamic", "CNN, dynamic batching up to 8", [("INPUT0", "FP32", [1, 3, 64, 64])],
             "cnn_dynamic/1/model.onnx", batch=8,
             mlserver={"implementation": "runtimes.OnnxRuntime", "max_batch_size": 8, "max_batch_time": 0.0005}),
    # 16 MiB as JSON is ~20 MB of text and about a second of parsing on each side: beyond 4 requests
    # in flight wrk would only measure queueing (p99 = concurrency x service time), so JSON stops at 4.
    Workload("simple_identity", "identity, FP32 16 MiB (transfer)", [("INPUT0", "FP32", [1, MIB16])],
             "simple_identity/1/model.onnx", json_concurrency=(1, 4), duration_s=20, timeout_s=60, window_ms=5000),
    # The compute limit of an identity is ONNX Runtime's identity on the same tensor.
    Workload("python_identity", "Python backend identity, FP32 [1,1024]", [("INPUT0", "FP32", [1, 1024])],
             "simple_identity/1/model.onnx", mlserver={"implementation": "runtimes.Identity"}),
]


def write_repository(workloads):
    """The Triton model repository every Triton-protocol peer serves (also what to give a real Triton)."""
    shutil.rmtree(REPOSITORY, ignore_errors=True)
    for name in ("simple", "simple_identity"):
        shutil.copytree(EXAMPLES / name, REPOSITORY / name)
    for name, config in (("cnn", CNN_CONFIG), ("cnn_dynamic", CNN_CONFIG + DYNAMIC_BATCHING)):
        build_cnn(REPOSITORY / name / "1" / "model.onnx")
        (REPOSITORY / name / "config.pbtxt").write_text(f'name: "{name}"\n{config}')
    (REPOSITORY / "python_identity" / "1").mkdir(parents=True)
    (REPOSITORY / "python_identity" / "config.pbtxt").write_text(f'name: "python_identity"\n{PYTHON_CONFIG}')
    (REPOSITORY / "python_identity" / "1" / "model.py").write_text(PYTHON_IDENTITY)
    wanted = {w.name for w in workloads} | {w.onnx.split("/")[0] for w in workloads}
    for model in REPOSITORY.iterdir():
        if model.name not in wanted:
            shutil.rmtree(model)


def http_json(url, body=None):
    with urllib.request.urlopen(urllib.request.Request(url, body, {"Content-Type": "application/json"}), timeout=120) as r:
        return r.read()


@dataclass
class Peer:
    name: str
    http: str  # host:port
    grpc: str = None  # host:port where perf_analyzer can reach the same server over gRPC
    process: object = None

    def unavailable(self, model):
        """None when `model` is ready here, else why not (the repository index's reason when it has one)."""
        try:
            http_json(f"http://{self.http}/v2/models/{model}/ready")
            return None
        except urllib.error.HTTPError:
            pass
        try:
            index = json.loads(http_json(f"http://{self.http}/v2/repository/index", b"{}"))
            return next((m.get("reason") or m.get("state") for m in index if m["name"] == model), "not in the repository")
        except (OSError, ValueError):
            return "not ready"

    def stop(self):
        if self.process:
            self.process.stop()


class MLServer:
    """MLServer on free ports, serving the workloads' models through bench/mlserver_runtime."""

    def __init__(self, workloads, workers):
        folder = WORK / "mlserver"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        self.http, grpc, metrics = free_port(), free_port(), free_port()
        # debug=false turns off uvicorn's per-request access log, as a production deployment would.
        settings = {"http_port": self.http, "grpc_port": grpc, "metrics_port": metrics,
                    "parallel_workers": workers, "debug": False}
        (folder / "settings.json").write_text(json.dumps(settings))
        for w in workloads:
            (folder / w.name).mkdir()
            model = {"name": w.name, "parameters": {"uri": str(REPOSITORY / w.onnx)}, **w.mlserver}
            (folder / w.name / "model-settings.json").write_text(json.dumps(model))
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(RUNTIMES), os.environ.get("PYTHONPATH")]))}
        self.log = open(WORK / "mlserver.log", "w")
        self.proc = subprocess.Popen([sys.executable, "-m", "mlserver.cli.main", "start", str(folder)],
                                     env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + 120
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mlserver exited with {self.proc.returncode}; see {self.log.name}")
            try:
                http_json(f"http://127.0.0.1:{self.http}/v2/health/ready")
                break
            except OSError:
                if time.time() > deadline:
                    raise RuntimeError(f"mlserver did not become ready in 120 s; see {self.log.name}")
                time.sleep(0.2)

    def stop(self):
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:  # seen hanging in its shutdown: end it and its workers
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.log.close()


def start_peers(args, workloads):
    nereid = Server(REPOSITORY, "--exit-on-error=false", "--strict-readiness=false")
    peers = [Peer("Nereid", f"127.0.0.1:{nereid.http}", f"127.0.0.1:{nereid.grpc}", nereid)]
    if args.no_mlserver:
        print("MLServer: skipped (--no-mlserver)")
    else:
        try:
            mlserver = MLServer(workloads, args.mlserver_workers)
            peers.append(Peer("MLServer", f"127.0.0.1:{mlserver.http}", process=mlserver))
        except (ImportError, RuntimeError, OSError) as e:
            print(f"MLServer: skipped ({e})")
    if args.triton_url:
        host, port = args.triton_url.rsplit(":", 1)
        peers.append(Peer("Triton", args.triton_url, args.triton_grpc_url or f"{host}:{int(port) + 1}"))
    return peers


def measure(w, peers, args, results, notes):
    """Every figure of one workload, appended to `results` as it is measured (and printed)."""
    def record(server, load, concurrency, run):
        try:
            r = run()
            if r["infer_per_s"] == 0:
                raise RuntimeError("no request completed in the window")
        except (RuntimeError, subprocess.CalledProcessError, OSError) as e:
            why = " ".join(str(e).split())[-300:]  # the end of a tool's output says what went wrong
            notes.append(f"{w.name}: {server} {load} at concurrency {concurrency} failed: {why}")
            print(f"  {server:8} {load:22} c={concurrency:<3} FAILED {why}")
            return
        results.append({"workload": w.name, "server": server, "load": load, "concurrency": concurrency, **r})
        print(f"  {server:8} {load:22} c={concurrency:<3} {r['infer_per_s']:10.1f} infer/s  p50 {r['p50_us']:10.0f} us"
              f"  p99 {r['p99_us']:10.0f} us", flush=True)

    print(f"\n{w.title} [{w.name}]", flush=True)
    record("ONNX Runtime", "in-process", w.batch, lambda: inprocess(w))
    ready = []
    for p in peers:
        reason = p.unavailable(w.name)
        if reason:
            notes.append(f"{w.name}: {p.name} skipped, model not available: {reason}")
            print(f"  {p.name}: skipped, model '{w.name}' not available: {reason}")
        else:
            ready.append(p)
    window = w.window_ms // 3 if args.quick else w.window_ms
    for p in (p for p in ready if p.grpc):
        for protocol, url in (("http", p.http), ("grpc", p.grpc)):
            for c in args.concurrency:
                record(p.name, f"perf_analyzer {protocol}", c,
                       lambda: perf_analyzer(w.name, url, protocol, c, *w.perf_analyzer_args(), window_ms=window))
    body = w.request()
    duration = max(2, w.duration_s // 4) if args.quick else w.duration_s
    concurrency = [c for c in args.concurrency if c in w.json_concurrency]
    for p in ready:
        for c in concurrency:
            record(p.name, "wrk JSON", c,
                   lambda: wrk(f"http://{p.http}/v2/models/{w.name}/infer", c, body, duration, w.timeout_s))
    if ready and shutil.which("nginx"):
        nginx = Nginx(http_json(f"http://{ready[0].http}/v2/models/{w.name}/infer", body))
        path = "/read/" if len(body) > 2**20 else "/"  # see Nginx: "/" stalls wrk on bodies of many MB
        try:
            for c in concurrency:
                record("nginx", "wrk JSON", c, lambda: wrk(f"http://127.0.0.1:{nginx.port}{path}", c, body, duration, w.timeout_s))
        finally:
            nginx.stop()
    elif ready:
        notes.append(f"{w.name}: no nginx on PATH, no loopback limit")


def inprocess(w):
    iterations = max(50, int(20000 / (1 + size(w.inputs[0][2]) * w.batch / 1000)))
    run = subprocess.run([str(INPROCESS), *w.inprocess_args(), "--iterations", str(iterations)],
                         capture_output=True, text=True)
    if run.returncode != 0:
        raise RuntimeError(f"{INPROCESS.name}: {run.stderr.strip()[-300:]}")
    r = json.loads(run.stdout)
    return {**r, "infer_per_s": r["infer_per_s"] * w.batch}  # one run answers `batch` requests


def machine():
    cpu = platform.processor()
    if Path("/proc/cpuinfo").exists():
        cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), cpu)
    elif sys.platform == "darwin":
        cpu = subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True).stdout.strip()
    try:
        commit = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    except OSError:  # no git (a copy of the tree)
        commit = ""
    return {"cpu": cpu, "cores": os.cpu_count(), "os": platform.platform(terse=True), "commit": commit,
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workloads", default=",".join(w.name for w in WORKLOADS), help="comma-separated subset")
    parser.add_argument("--concurrency", default=",".join(map(str, CONCURRENCY)))
    parser.add_argument("--quick", action="store_true", help="short windows: a smoke test, not figures")
    parser.add_argument("--triton-url", help="host:http_port of a Triton serving bench/results/tmp/repository")
    parser.add_argument("--triton-grpc-url", help="host:grpc_port of that Triton (default: HTTP port + 1)")
    parser.add_argument("--no-mlserver", action="store_true")
    parser.add_argument("--mlserver-workers", type=int, default=int(os.environ.get("MLSERVER_WORKERS", 1)),
                        help="MLServer's parallel_workers (default 1, its own default)")
    parser.add_argument("--prepare", action="store_true", help="only write the model repository")
    parser.add_argument("--out", type=Path, help="where results.{json,md,png} go (default bench/results, "
                                                  "bench/results/tmp with --quick)")
    args = parser.parse_args()
    args.concurrency = [int(c) for c in args.concurrency.split(",")]
    args.out = args.out or (WORK if args.quick else RESULTS)
    names = args.workloads.split(",")
    workloads = [w for w in WORKLOADS if w.name in names]
    if args.triton_url and REPOSITORY.is_dir():
        print(f"leaving {REPOSITORY} as it is: Triton serves it")
    else:
        write_repository(workloads)
    if args.prepare:
        print(f"wrote {REPOSITORY}; for Triton: tritonserver --model-repository {REPOSITORY}")
        return
    results, notes = [], []
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("bench: terminated"))  # still stop the servers
    peers = start_peers(args, workloads)
    try:
        for w in workloads:
            measure(w, peers, args, results, notes)
    finally:
        for p in peers:
            p.stop()
    meta = {**machine(), "command": " ".join(["scripts/bench", *sys.argv[1:]]), "quick": args.quick,
            "titles": {w.name: w.title for w in workloads}, "notes": notes}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps({"meta": meta, "results": results}, indent=1))
    report.write(args.out)


if __name__ == "__main__":
    sys.exit(main())
