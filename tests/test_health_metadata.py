"""Health, server and model metadata, model configuration, readiness per version, logging settings."""

import json

import pytest
from tritonclient.grpc import model_config_pb2

import harness

pytestmark = pytest.mark.timeout(60)

# Extensions this server implements and tests exercise (Triton's core lists these and more:
# core/src/server.cc).
EXPECTED_EXTENSIONS = {
    "classification", "sequence", "model_repository", "model_configuration",
    "binary_tensor_data", "statistics", "logging",
}


def test_live_and_ready(server, http_client, grpc_client):
    assert http_client.is_server_live()
    assert http_client.is_server_ready()
    assert grpc_client.is_server_live()
    assert grpc_client.is_server_ready()
    for kind in ("live", "ready"):
        status, _, body = harness.request(server.http_port, "GET", "/v2/health/" + kind)
        assert status == 200, body


def test_server_metadata_http(http_client):
    md = http_client.get_server_metadata()
    assert md["name"] == "triton"
    assert isinstance(md["version"], str) and md["version"]
    assert EXPECTED_EXTENSIONS <= set(md["extensions"]), md["extensions"]


def test_server_metadata_grpc(grpc_client, http_client):
    md = grpc_client.get_server_metadata()
    assert md.name == "triton"
    assert md.version == http_client.get_server_metadata()["version"]
    assert EXPECTED_EXTENSIONS <= set(md.extensions)


@pytest.mark.parametrize("form", ["--id=nereid-test", "--id nereid-test"])
def test_id_flag_sets_server_name(start_server, tmp_path, repo, form):
    srv = start_server(repo("simple"), *form.split(" "))
    assert srv.http_client().get_server_metadata()["name"] == "nereid-test"
    assert srv.grpc_client().get_server_metadata().name == "nereid-test"


def test_model_metadata_http(http_client):
    md = http_client.get_model_metadata("simple")
    assert md["name"] == "simple"
    assert md["versions"] == ["1"]
    assert md["platform"] == "onnxruntime_onnx"
    assert md["inputs"] == [
        {"name": "INPUT0", "datatype": "INT32", "shape": [-1, 16]},
        {"name": "INPUT1", "datatype": "INT32", "shape": [-1, 16]},
    ]
    assert md["outputs"] == [
        {"name": "OUTPUT0", "datatype": "INT32", "shape": [-1, 16]},
        {"name": "OUTPUT1", "datatype": "INT32", "shape": [-1, 16]},
    ]
    # The same document with an explicit version.
    assert http_client.get_model_metadata("simple", "1") == md


def test_model_metadata_datatypes(http_client):
    expected = {"simple_int8": "INT8", "simple_fp32": "FP32", "simple_string": "BYTES"}
    for model, datatype in expected.items():
        md = http_client.get_model_metadata(model)
        assert [i["datatype"] for i in md["inputs"]] == [datatype, datatype], model
        assert [o["datatype"] for o in md["outputs"]] == [datatype, datatype], model
    identity = http_client.get_model_metadata("simple_identity")
    assert identity["inputs"] == [{"name": "INPUT0", "datatype": "FP32", "shape": [-1, -1]}]
    sequence = http_client.get_model_metadata("simple_sequence")
    # Control inputs (START, READY) are not model inputs in the metadata.
    assert sequence["inputs"] == [{"name": "INPUT", "datatype": "INT32", "shape": [-1, 1]}]
    assert sequence["outputs"] == [{"name": "OUTPUT", "datatype": "INT32", "shape": [-1, 1]}]


def test_model_metadata_grpc(grpc_client):
    md = grpc_client.get_model_metadata("simple")
    assert md.name == "simple"
    assert list(md.versions) == ["1"]
    assert md.platform == "onnxruntime_onnx"
    assert [(t.name, t.datatype, list(t.shape)) for t in md.inputs] == [
        ("INPUT0", "INT32", [-1, 16]), ("INPUT1", "INT32", [-1, 16])]
    assert [(t.name, t.datatype, list(t.shape)) for t in md.outputs] == [
        ("OUTPUT0", "INT32", [-1, 16]), ("OUTPUT1", "INT32", [-1, 16])]


def test_model_config_http(http_client):
    cfg = http_client.get_model_config("simple")
    assert cfg["name"] == "simple"
    assert cfg["platform"] == "onnxruntime_onnx"
    assert cfg["backend"] == "onnxruntime"
    assert cfg["max_batch_size"] == 8
    assert [(i["name"], i["data_type"], i["dims"]) for i in cfg["input"]] == [
        ("INPUT0", "TYPE_INT32", [16]), ("INPUT1", "TYPE_INT32", [16])]
    assert [(o["name"], o["data_type"], o["dims"]) for o in cfg["output"]] == [
        ("OUTPUT0", "TYPE_INT32", [16]), ("OUTPUT1", "TYPE_INT32", [16])]
    # Fields Triton completes: version policy, instance groups, default file name.
    assert cfg["version_policy"] == {"latest": {"num_versions": 1}}
    assert cfg["default_model_filename"] == "model.onnx"
    assert cfg["instance_group"], cfg
    assert cfg["instance_group"][0]["name"] == "simple"  # Triton names the default group after the model
    assert cfg["instance_group"][0]["count"] >= 1


def test_model_config_raw_json_is_numbers_not_strings(server):
    # Triton prints int64 fields (dims, max_batch_size) as JSON numbers, not protobuf's strings.
    status, cfg = harness.request_json(server.http_port, "GET", "/v2/models/simple/config")
    assert status == 200
    assert cfg["input"][0]["dims"] == [16]
    assert cfg["max_batch_size"] == 8


def test_sequence_model_config(http_client, grpc_client):
    cfg = http_client.get_model_config("simple_sequence")
    controls = {c["name"]: c["control"][0] for c in cfg["sequence_batching"]["control_input"]}
    assert controls["START"]["kind"] == "CONTROL_SEQUENCE_START"
    assert controls["START"]["int32_false_true"] == [0, 1]
    assert controls["READY"]["kind"] == "CONTROL_SEQUENCE_READY"
    assert controls["READY"]["int32_false_true"] == [0, 1]
    g = grpc_client.get_model_config("simple_sequence").config
    assert g.sequence_batching.max_sequence_idle_microseconds == 5000000
    assert [c.name for c in g.sequence_batching.control_input] == ["START", "READY"]


def test_model_config_grpc(grpc_client):
    cfg = grpc_client.get_model_config("simple").config
    assert cfg.name == "simple"
    assert cfg.max_batch_size == 8
    assert [(i.name, i.data_type, list(i.dims)) for i in cfg.input] == [
        ("INPUT0", model_config_pb2.TYPE_INT32, [16]), ("INPUT1", model_config_pb2.TYPE_INT32, [16])]
    fp = grpc_client.get_model_config("simple_string").config
    assert fp.input[0].data_type == model_config_pb2.TYPE_STRING


def test_model_ready(http_client, grpc_client):
    for model in ("simple", "simple_int8", "simple_fp32", "simple_string", "simple_identity",
                  "simple_sequence"):
        assert http_client.is_model_ready(model), model
        assert grpc_client.is_model_ready(model), model
    assert http_client.is_model_ready("simple", "1")
    assert grpc_client.is_model_ready("simple", "1")
    assert not http_client.is_model_ready("simple", "2")
    assert not grpc_client.is_model_ready("simple", "2")
    assert not http_client.is_model_ready("no_such_model")
    assert not grpc_client.is_model_ready("no_such_model")


def test_model_ready_per_version(start_server, tmp_path):
    # Versions 1, 2 and 3 on disk; the default policy serves only the latest, `all` serves all.
    repository = tmp_path / "models"
    model = harness.make_models.build_add_sub("multi", harness.make_models.TensorProto.INT32)
    config = harness.read_config("simple").replace('name: "simple"', 'name: "multi"')
    for version in (1, 2, 3):
        harness.write_model(repository, "multi", config, model, version)
    harness.write_model(repository, "every", config.replace('name: "multi"', 'name: "every"')
                        + "version_policy: { all { } }\n", model, 1)
    harness.write_model(repository, "every", None, model, 2)
    harness.write_model(repository, "picked", config.replace('name: "multi"', 'name: "picked"')
                        + "version_policy: { specific { versions: [ 1, 3 ] } }\n", model, 1)
    for version in (2, 3):
        harness.write_model(repository, "picked", None, model, version)
    srv = start_server(str(repository))
    client = srv.http_client()
    grpc = srv.grpc_client()
    expected = {("multi", "1"): False, ("multi", "2"): False, ("multi", "3"): True,
                ("every", "1"): True, ("every", "2"): True,
                ("picked", "1"): True, ("picked", "2"): False, ("picked", "3"): True}
    for (name, version), ready in expected.items():
        assert client.is_model_ready(name, version) == ready, (name, version)
        assert grpc.is_model_ready(name, version) == ready, (name, version)
    assert client.get_model_metadata("multi")["versions"] == ["3"]
    assert sorted(client.get_model_metadata("every")["versions"]) == ["1", "2"]
    assert sorted(client.get_model_metadata("picked")["versions"]) == ["1", "3"]
    # Model ready without a version means "some version is ready" (Triton's default).
    assert client.is_model_ready("multi")


def test_model_ready_unknown_version_or_model(server):
    # http_server.cc HandleModelReady: 200 when ready; otherwise Triton up to 2.7x answers
    # 400 {"error": "Model version not ready"}; since core commit 73aad7c (2026-06) the lookup error
    # itself comes back (NOT_FOUND -> 404, "Request for unknown model: ..."). Either is Triton.
    status, _, body = harness.request(server.http_port, "GET", "/v2/models/simple/versions/1/ready")
    assert status == 200, body
    for path, unknown in (("/v2/models/simple/versions/2/ready", "'simple' version 2 is not found"),
                          ("/v2/models/nope/ready", "'nope' is not found")):
        status, _, body = harness.request(server.http_port, "GET", path)
        assert (status, json.loads(body)) in (
            (400, {"error": "Model version not ready"}),
            (404, {"error": "Request for unknown model: " + unknown}),
        ), (path, status, body)


def test_unknown_model_or_version_metadata_is_404(server):
    # Without model namespacing the core looks the model up in its lifecycle map: NOT_FOUND.
    for path, message in (("/v2/models/nope", "Request for unknown model: 'nope' is not found"),
                          ("/v2/models/nope/config", "Request for unknown model: 'nope' is not found"),
                          ("/v2/models/simple/versions/2", "Request for unknown model: 'simple' version 2 is not found")):
        status, _, body = harness.request(server.http_port, "GET", path)
        assert (status, json.loads(body)) == (404, {"error": message}), path


def test_logging_settings_http(http_client):
    settings = http_client.get_log_settings()
    for key in ("log_file", "log_info", "log_warning", "log_error", "log_verbose_level", "log_format"):
        assert key in settings, settings
    assert settings["log_format"] == "default"
    original = dict(settings)
    try:
        updated = http_client.update_log_settings({"log_verbose_level": 1, "log_info": False})
        assert updated["log_verbose_level"] == 1
        assert updated["log_info"] is False
        again = http_client.get_log_settings()
        assert again["log_verbose_level"] == 1 and again["log_info"] is False
        # Setting the format; anything but "default" and "ISO8601" is refused.
        assert http_client.update_log_settings({"log_format": "ISO8601"})["log_format"] == "ISO8601"
        with pytest.raises(Exception) as err:
            http_client.update_log_settings({"log_format": "fancy"})
        assert "invalid argument for --log_format, got: fancy" in str(err.value)
        # The log file cannot be changed over the network (http_server.cc HandleLogging).
        with pytest.raises(Exception) as err:
            http_client.update_log_settings({"log_file": "/tmp/x.log"})
        assert "log file location can not be updated through network protocol" in str(err.value)
    finally:
        http_client.update_log_settings({k: original[k] for k in
                                         ("log_info", "log_verbose_level", "log_format")})
    assert http_client.get_log_settings()["log_verbose_level"] == original["log_verbose_level"]


def test_logging_settings_raw_and_grpc(server, grpc_client):
    status, body = harness.request_json(server.http_port, "POST", "/v2/logging", {"log_warning": False})
    assert status == 200, body
    assert body["log_warning"] is False
    g = grpc_client.get_log_settings(as_json=True)["settings"]
    assert g["log_warning"]["bool_param"] is False
    grpc_client.update_log_settings({"log_warning": True})
    status, body = harness.request_json(server.http_port, "GET", "/v2/logging")
    assert status == 200 and body["log_warning"] is True


def test_unknown_route_is_404(server):
    status, _, body = harness.request(server.http_port, "GET", "/v2/not_a_route")
    assert status == 404
    assert json.loads(body) == {"error": "Not Found"}
    status, _, body = harness.request(server.http_port, "GET", "/v2/models/simple/infer")
    assert status == 405, body
    assert json.loads(body) == {"error": "Method Not Allowed"}
