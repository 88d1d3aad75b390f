"""The command line behaves like tritonserver's (server src/command_line_parser.cc, src/main.cc)."""

import os
import socket

import numpy as np
import pytest
import tritonclient.http as httpclient

import harness
from tensors import add_sub_inputs, check_add_sub

pytestmark = pytest.mark.timeout(90)


def test_unknown_flag_exits_1(repo):
    code, out = harness.run_to_exit(["--model-repository", repo("simple"), "--no-such-flag=3"])
    assert code == 1, out
    assert "--no-such-flag" in out
    # tritonserver prints "Usage: tritonserver [options]" and the option list.
    assert "Usage:" in out


@pytest.mark.parametrize("args, words", [
    (["--http-port", "abc"], ["--http-port", "abc"]),
    (["--exit-on-error=maybe"], ["exit-on-error", "maybe"]),
    (["--model-control-mode=sometimes"], ["model-control-mode"]),
    (["--repository-poll-secs=-"], ["repository-poll-secs"]),
])
def test_bad_value_exits_1(repo, args, words):
    # tritonserver: 'Bad option: "--http-port".' + 'Invalid option value. Got abc',
    # 'invalid value for bool option: maybe', ...
    code, out = harness.run_to_exit(["--model-repository", repo("simple")] + args)
    assert code == 1, out
    for word in words:
        assert word in out, (word, out)


def test_missing_model_repository_exits_1():
    code, out = harness.run_to_exit([])
    assert code == 1, out
    # core server.cc: "--model-repository must be specified"
    assert "--model-repository must be specified" in out


def test_nonexistent_model_repository_exits_1(tmp_path):
    code, out = harness.run_to_exit(["--model-repository", str(tmp_path / "does-not-exist")])
    assert code == 1, out


def test_port_in_use_exits_1(repo):
    blocker = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    blocker.bind(("0.0.0.0", 0))
    blocker.listen(1)
    port = blocker.getsockname()[1]
    try:
        grpc_port, metrics_port = harness.free_ports(2)
        code, out = harness.run_to_exit(
            ["--model-repository", repo("simple"), "--http-port", str(port), "--grpc-port", str(grpc_port),
             "--metrics-port", str(metrics_port)], with_ports=False)
    finally:
        blocker.close()
    assert code == 1, out
    # http_server.cc: "Socket '<address>:<port>' already in use "
    assert "already in use" in out


@pytest.mark.parametrize("style", ["space", "equals"])
def test_flag_styles(repo, style):
    # Both the harness's own flags (ports, repository) and --id use the style under test.
    args = ["--id=styled"] if style == "equals" else ["--id", "styled"]
    srv = harness.Server(repo("simple"), args, flag_style=style)
    with srv.start():
        client = srv.http_client()
        assert client.get_server_metadata()["name"] == "styled"
        inputs, a, b = add_sub_inputs(httpclient)
        check_add_sub(client.infer("simple", inputs), a, b)


def test_model_config_name(start_server, repo):
    path = repo("simple", "simple_fp32")
    configs = os.path.join(path, "simple", "configs")
    os.makedirs(configs)
    with open(os.path.join(configs, "small.pbtxt"), "w") as f:
        f.write(harness.read_config("simple").replace("max_batch_size: 8", "max_batch_size: 2"))
    srv = start_server(path, "--model-config-name=small")
    client = srv.http_client()
    # simple uses configs/small.pbtxt, simple_fp32 (no configs/small.pbtxt) its config.pbtxt.
    assert client.get_model_config("simple")["max_batch_size"] == 2
    assert client.get_model_config("simple_fp32")["max_batch_size"] == 8
    inputs, a, b = add_sub_inputs(httpclient, batch=2)
    check_add_sub(client.infer("simple", inputs), a, b)


def test_multiple_repositories(start_server, repo):
    first = repo("simple", path="first")
    second = repo("simple_fp32", path="second")
    srv = start_server([first, second])
    client = srv.http_client()
    assert client.is_model_ready("simple")
    assert client.is_model_ready("simple_fp32")


def test_duplicate_model_across_repositories_exit_on_error_false(start_server, repo):
    first = repo("simple", "simple_fp32", path="first")
    second = repo("simple", "simple_int8", path="second")
    srv = start_server([first, second], "--exit-on-error=false", wait_for="live")
    client = srv.http_client()
    harness.wait_until(lambda: client.is_model_ready("simple_fp32") and client.is_model_ready("simple_int8"),
                       message="the unique models to load")
    index = {m["name"]: m for m in client.get_model_repository_index()}
    # core model_repository_manager.h MODEL_READY_REASON_DUPLICATE, version -1 -> no version field.
    assert index["simple"] == {"name": "simple", "state": "UNAVAILABLE",
                               "reason": "model appears in two or more repositories"}
    assert index["simple_fp32"]["state"] == "READY"
    assert not client.is_model_ready("simple")
    inputs, a, b = add_sub_inputs(httpclient, np.float32)
    check_add_sub(client.infer("simple_fp32", inputs), a, b)


def test_duplicate_model_across_repositories_exits_by_default(repo):
    first = repo("simple", path="first")
    second = repo("simple", path="second")
    code, out = harness.run_to_exit(["--model-repository", first, "--model-repository", second])
    assert code == 1, out
    # tritonserver: "error: creating server: Internal - failed to load all models"
    assert "failed to load all models" in out


def test_exit_on_error(start_server, repo):
    path = repo("simple")
    harness.write_broken_model(path, "broken")
    code, out = harness.run_to_exit(["--model-repository", path])
    assert code == 1, out
    assert "failed to load all models" in out
    code, out = harness.run_to_exit(["--model-repository", path, "--exit-on-error", "true"])
    assert code == 1, out
    srv = start_server(path, "--exit-on-error", "false", wait_for="live")
    client = srv.http_client()
    harness.wait_until(lambda: client.is_model_ready("simple"), message="simple to load")
    assert not client.is_model_ready("broken")
    inputs, a, b = add_sub_inputs(httpclient)
    check_add_sub(client.infer("simple", inputs), a, b)


def test_strict_readiness_false(start_server, repo):
    # --strict-readiness=false: ready as soon as the server is up, whatever the models.
    path = repo("simple")
    harness.write_broken_model(path, "broken")
    srv = start_server(path, "--exit-on-error=false", "--strict-readiness=false", wait_for="ready")
    assert srv.http_client().is_server_ready()
