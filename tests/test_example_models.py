"""The example ONNX models compute what their configs say (ONNX Runtime only, no server)."""

import os

import pytest

import harness

make_models = harness.make_models


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", sorted(make_models.EXAMPLES) + ["slow"])
def test_model_computes_expected_values(name):
    model = make_models.build_slow() if name == "slow" else make_models.EXAMPLES[name]()
    make_models.check(name, model)


@pytest.mark.timeout(60)
def test_make_models_is_idempotent(tmp_path):
    for name in make_models.EXAMPLES:
        os.makedirs(str(tmp_path / name))
        (tmp_path / name / "config.pbtxt").write_text(harness.read_config(name))
    written = make_models.make_repository(str(tmp_path), verify=False)
    assert sorted(written) == sorted(make_models.EXAMPLES)
    before = harness.snapshot(tmp_path)
    assert make_models.make_repository(str(tmp_path), verify=False) == []
    assert harness.snapshot(tmp_path) == before


def test_configs_name_their_folder():
    for name in make_models.EXAMPLES:
        assert 'name: "%s"' % name in harness.read_config(name)
        assert 'platform: "onnxruntime_onnx"' in harness.read_config(name)
