"""Start and stop the real `nereid` binary, build model repositories, and speak raw HTTP.

Everything here is plain Python so tests can use it directly; conftest.py wraps it in fixtures.
"""

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(ROOT, "examples")
EXAMPLE_REPOSITORY = os.path.join(EXAMPLES, "model_repository")
HOST = "127.0.0.1"

sys.path.insert(0, EXAMPLES)
import make_models  # noqa: E402  (examples/make_models.py)


def binary_path():
    """The server under test: $NEREID_BIN, else target/release/nereid."""
    return os.environ.get("NEREID_BIN") or os.path.join(ROOT, "target", "release", "nereid")


def free_ports(count):
    """`count` distinct TCP ports that were free a moment ago."""
    sockets, ports = [], []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((HOST, 0))
            sockets.append(s)
            ports.append(s.getsockname()[1])
    finally:
        for s in sockets:
            s.close()
    return ports


class ServerError(AssertionError):
    pass


class Server:
    """One `nereid` process on free ports.

    `repositories` is one path or a list; `args` are extra command-line arguments. The server's
    stdout and stderr go to a log file (see `log()`), shown in failure messages.
    """

    def __init__(self, repositories, args=(), env=None, binary=None, flag_style="space"):
        if isinstance(repositories, (str, os.PathLike)):
            repositories = [repositories]
        self.repositories = [str(r) for r in repositories]
        self.args = list(args)
        self.binary = binary or binary_path()
        self.flag_style = flag_style  # "space": --flag value, "equals": --flag=value
        self.http_port, self.grpc_port, self.metrics_port = free_ports(3)
        self.env = dict(os.environ)
        self.env.update(env or {})
        self.proc = None
        self._clients = []
        self._log = tempfile.NamedTemporaryFile(prefix="nereid-", suffix=".log", delete=False)

    # -- addresses ------------------------------------------------------------------------------
    @property
    def http_url(self):
        return "%s:%d" % (HOST, self.http_port)

    @property
    def grpc_url(self):
        return "%s:%d" % (HOST, self.grpc_port)

    @property
    def metrics_url(self):
        return "%s:%d" % (HOST, self.metrics_port)

    def command(self):
        flags = [("--model-repository", r) for r in self.repositories] + [
            ("--http-port", str(self.http_port)),
            ("--grpc-port", str(self.grpc_port)),
            ("--metrics-port", str(self.metrics_port)),
        ]
        cmd = [self.binary]
        for flag, value in flags:
            cmd += ["%s=%s" % (flag, value)] if self.flag_style == "equals" else [flag, value]
        return cmd + self.args

    # -- clients ----------------------------------------------------------------------------------
    def http_client(self, **kwargs):
        """A tritonclient.http client for this server, closed before the server is stopped
        (an open keep-alive connection would make a Triton-like server wait at shutdown)."""
        import tritonclient.http as httpclient

        kwargs.setdefault("network_timeout", 60.0)
        return self._keep(httpclient.InferenceServerClient(self.http_url, **kwargs))

    def grpc_client(self, **kwargs):
        import tritonclient.grpc as grpcclient

        return self._keep(grpcclient.InferenceServerClient(self.grpc_url, **kwargs))

    def _keep(self, client):
        self._clients.append(client)
        return client

    def close_clients(self):
        while self._clients:
            try:
                self._clients.pop().close()
            except Exception:  # noqa: BLE001 - closing is best effort
                pass

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self, wait_for="ready", timeout=20.0):
        """Start the process and wait until GET /v2/health/<wait_for> answers 200
        (wait_for=None: don't wait)."""
        if not os.path.isfile(self.binary):
            raise ServerError(
                "server binary %s not found: build it with `cargo build --release` "
                "(or ./scripts/setup), or point NEREID_BIN at one" % self.binary)
        self.proc = subprocess.Popen(
            self.command(), stdout=self._log, stderr=subprocess.STDOUT, env=self.env, cwd=ROOT)
        if wait_for:
            self.wait_for(wait_for, timeout)
        return self

    def wait_for(self, what="ready", timeout=20.0):
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise ServerError("server exited with code %s before it was %s\n%s"
                                  % (self.proc.returncode, what, self.describe()))
            try:
                status, _, _ = request(self.http_port, "GET", "/v2/health/" + what, timeout=1.0)
                if status == 200:
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise ServerError("server not %s after %.0fs\n%s" % (what, timeout, self.describe()))
            time.sleep(0.05)

    def stop(self, expect_code=0, timeout=30.0):
        """SIGTERM, wait, and (unless expect_code is None) assert the exit code. Returns it."""
        if self.proc is None:
            return None
        self.close_clients()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise ServerError("server did not exit within %.0fs of SIGTERM\n%s"
                                  % (timeout, self.describe()))
        code = self.proc.returncode
        if expect_code is not None and code != expect_code:
            raise ServerError("server exited with code %s, expected %s\n%s"
                              % (code, expect_code, self.describe()))
        return code

    def kill(self):
        self.close_clients()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def log(self):
        with open(self._log.name, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def describe(self):
        tail = self.log()[-6000:]
        return "command: %s\n--- server output (tail) ---\n%s" % (" ".join(self.command()), tail)

    def __enter__(self):
        if self.proc is None:
            self.start()
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.stop()
        else:
            self.kill()
        return False


def run_to_exit(args, timeout=45.0, with_ports=True):
    """Run the binary with `args` (plus free --http/--grpc/--metrics ports) and wait for it to exit
    on its own. Returns (exit code, combined output). A server still running after `timeout` is
    killed and reported as a failure."""
    cmd = [binary_path()]
    if with_ports:
        http_port, grpc_port, metrics_port = free_ports(3)
        cmd += ["--http-port", str(http_port), "--grpc-port", str(grpc_port), "--metrics-port", str(metrics_port)]
    cmd += list(args)
    if not os.path.isfile(cmd[0]):
        raise ServerError("server binary %s not found" % cmd[0])
    try:
        done = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout, cwd=ROOT)
    except subprocess.TimeoutExpired as e:
        out = (e.output or b"").decode("utf-8", "replace")
        raise ServerError("%s still running after %.0fs, expected it to exit\n%s" % (" ".join(cmd), timeout, out))
    return done.returncode, done.stdout.decode("utf-8", "replace")


# -- raw HTTP -----------------------------------------------------------------------------------
def request(port, method, path, body=None, headers=None, timeout=10.0):
    """One HTTP request to 127.0.0.1:port. Returns (status, headers dict with lower-case keys, body)."""
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        if isinstance(body, str):
            body = body.encode()
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def request_json(port, method, path, payload=None, timeout=10.0):
    """Like request() with a JSON body; returns (status, decoded JSON or None)."""
    body = None if payload is None else json.dumps(payload)
    status, _, data = request(port, method, path, body,
                              {"Content-Type": "application/json"} if body else None, timeout)
    return status, (json.loads(data) if data else None)


def binary_infer_body(header, blobs):
    """KServe binary tensor extension: the JSON header followed by the raw tensors.
    Returns (body, headers)."""
    head = json.dumps(header).encode()
    body = head + b"".join(blobs)
    return body, {"Inference-Header-Content-Length": str(len(head)),
                  "Content-Type": "application/octet-stream"}


# -- model repositories -------------------------------------------------------------------------
def copy_model(name, repository, as_name=None):
    """Copy examples/model_repository/<name> (config and generated ONNX file) into `repository`,
    optionally renaming the folder (and the config's name field)."""
    src = os.path.join(EXAMPLE_REPOSITORY, name)
    if not os.path.isfile(os.path.join(src, "1", "model.onnx")):
        make_models.make_repository(names=[name])
    dst = os.path.join(str(repository), as_name or name)
    shutil.copytree(src, dst)
    if as_name:
        path = os.path.join(dst, "config.pbtxt")
        with open(path) as f:
            text = f.read()
        with open(path, "w") as f:
            f.write(text.replace('name: "%s"' % name, 'name: "%s"' % as_name))
    return dst


def make_repository(path, names):
    """A model repository at `path` holding copies of the named example models."""
    os.makedirs(str(path), exist_ok=True)
    for name in names:
        copy_model(name, path)
    return str(path)


def write_model(repository, name, config_text, model, version=1):
    """A model folder <repository>/<name> with config.pbtxt and <version>/model.onnx."""
    folder = os.path.join(str(repository), name)
    os.makedirs(folder, exist_ok=True)
    if config_text is not None:
        with open(os.path.join(folder, "config.pbtxt"), "w") as f:
            f.write(config_text)
    if model is not None:
        make_models.write_model(model, os.path.join(folder, str(version), "model.onnx"))
    return folder


def write_broken_model(repository, name):
    """A model folder with simple's config and a model.onnx that is not ONNX: it fails to load."""
    folder = write_model(repository, name, read_config("simple").replace('name: "simple"', 'name: "%s"' % name), None)
    os.makedirs(os.path.join(folder, "1"), exist_ok=True)
    with open(os.path.join(folder, "1", "model.onnx"), "wb") as f:
        f.write(b"this is not an onnx model")
    return folder


def read_config(name):
    with open(os.path.join(EXAMPLE_REPOSITORY, name, "config.pbtxt")) as f:
        return f.read()


def snapshot(path):
    """{relative path: (size, mtime_ns, bytes)} of every file under `path`, to detect changes."""
    result = {}
    for dirpath, _, files in os.walk(str(path)):
        for fname in files:
            full = os.path.join(dirpath, fname)
            st = os.stat(full)
            with open(full, "rb") as f:
                result[os.path.relpath(full, str(path))] = (st.st_size, st.st_mtime_ns, f.read())
    return result


def wait_until(predicate, timeout=10.0, interval=0.1, message="condition"):
    """Poll `predicate` until it returns a truthy value; returns it, or fails after `timeout`."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
            if last:
                return last
        except Exception as e:  # noqa: BLE001 - report the last failure below
            last = e
        time.sleep(interval)
    raise AssertionError("timed out after %.0fs waiting for %s (last: %r)" % (timeout, message, last))


def parse_metrics(text):
    """Prometheus text format -> {(name, frozenset(labels.items())): value}."""
    samples = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        if "{" in line:
            name, rest = line.split("{", 1)
            labels_text, value = rest.rsplit("}", 1)
            labels = {}
            for part in _split_labels(labels_text):
                k, v = part.split("=", 1)
                labels[k.strip()] = v.strip().strip('"')
        else:
            name, value = line.split(None, 1)
            labels = {}
        samples[(name.strip(), frozenset(labels.items()))] = float(value.split()[0])
    return samples


def _split_labels(text):
    parts, cur, quoted = [], "", False
    for ch in text:
        if ch == '"':
            quoted = not quoted
        if ch == "," and not quoted:
            if cur.strip():
                parts.append(cur)
            cur = ""
        else:
            cur += ch
    if cur.strip():
        parts.append(cur)
    return parts


def metric(samples, name, **labels):
    """The value of metric `name` whose labels include `labels` (None if absent)."""
    for (n, ls), v in samples.items():
        if n == name and all((k, str(val)) in ls for k, val in labels.items()):
            return v
    return None
