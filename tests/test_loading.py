"""Loading the model: local directories, the hub id, and clear messages when it can't be done."""

from __future__ import annotations

import time

import pytest

from nsfw_space import DEFAULT_MODEL, ModelLoadError, NSFWClassifier, Settings


def test_default_model_is_falconsai():
    assert DEFAULT_MODEL == "Falconsai/nsfw_image_detection"
    assert Settings().model == DEFAULT_MODEL


def test_missing_directory_names_the_model_and_the_setting(tmp_path):
    missing = tmp_path / "no-such-model"
    with pytest.raises(ModelLoadError) as caught:
        NSFWClassifier.from_pretrained(str(missing))
    message = str(caught.value)
    assert str(missing) in message and "no such directory" in message and "NSFW_SPACE_MODEL" in message


def test_directory_without_weights_is_refused_clearly(tmp_path, model_dir):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text((model_dir / "config.json").read_text())
    with pytest.raises(ModelLoadError, match=r"model\.safetensors.*NSFW_SPACE_MODEL"):
        NSFWClassifier.from_pretrained(str(broken))


def test_corrupt_weights_are_refused_clearly(tmp_path, model_dir):
    broken = tmp_path / "model-dir"
    broken.mkdir()
    for name in ("config.json", "preprocessor_config.json"):
        (broken / name).write_text((model_dir / name).read_text())
    (broken / "model.safetensors").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(ModelLoadError, match=r"safetensors weights are damaged.*NSFW_SPACE_MODEL"):
        NSFWClassifier.from_pretrained(str(broken))


def test_pickle_only_weights_are_never_loaded(tmp_path, model_dir):
    pickled = tmp_path / "legacy"
    pickled.mkdir()
    (pickled / "config.json").write_text((model_dir / "config.json").read_text())
    (pickled / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(ModelLoadError, match=r"only pickle weights.*only safetensors weights are loaded"):
        NSFWClassifier.from_pretrained(str(pickled))


def test_hub_model_offline_fails_fast_with_a_clear_message():
    started = time.monotonic()
    with pytest.raises(ModelLoadError) as caught:
        NSFWClassifier.from_pretrained("Falconsai/nsfw_image_detection", revision="main")
    assert time.monotonic() - started < 10
    message = str(caught.value)
    assert "Falconsai/nsfw_image_detection" in message
    assert "offline" in message or "could not be reached" in message
    assert "NSFW_SPACE_MODEL" in message
    assert "Traceback" not in message


def test_settings_come_from_namespaced_environment(model_dir):
    settings = Settings.from_env(
        {"NSFW_SPACE_MODEL": str(model_dir), "NSFW_SPACE_THRESHOLD": "0.7", "NSFW_SPACE_PRECISION": "fp32"}
    )
    assert settings.model == str(model_dir) and settings.threshold == 0.7
    clf = NSFWClassifier.from_settings(settings)
    assert clf.precision == "fp32" and clf.labels == ["normal", "nsfw"]


def test_bad_setting_values_are_refused():
    from nsfw_space import ConfigError

    with pytest.raises(ConfigError, match="NSFW_SPACE_THRESHOLD"):
        Settings.from_env({"NSFW_SPACE_THRESHOLD": "2"})
    with pytest.raises(ConfigError, match="NSFW_SPACE_BATCH_SIZE"):
        Settings.from_env({"NSFW_SPACE_BATCH_SIZE": "many"})


def test_auto_precision_follows_the_cpu(monkeypatch):
    import torch

    from nsfw_space.model import device

    monkeypatch.setattr(device, "cpu_has_fast_bf16", lambda: True)
    assert device.resolve_precision("auto", torch.device("cpu")) == torch.bfloat16
    monkeypatch.setattr(device, "cpu_has_fast_bf16", lambda: False)
    assert device.resolve_precision("auto", torch.device("cpu")) == torch.float32
    assert device.resolve_precision("auto", torch.device("cuda")) == torch.float16


def test_the_cpu_is_described_with_the_flags_that_decide_speed():
    from nsfw_space.model import device

    text = device.cpu_description({"avx2", "avx512_vnni"})
    assert text.startswith(device.cpu_model())
    assert "AVX2 yes, AVX512-BF16 no, AVX512-VNNI yes, AMX no" in text


def test_an_isa_limit_in_the_environment_is_what_the_int8_and_bf16_choices_see(monkeypatch):
    """ONEDNN_MAX_CPU_ISA keeps oneDNN (int8 and bf16 products) off newer instructions: the choices
    made from the flags (7-bit activations, bf16) and the figures' CPU line follow it; ATen's limit
    enters the int8 cache key, since the package's own kernels are written for that width."""
    from nsfw_space.model import device, quantize

    zen5 = {"avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile", "amx_int8", "amx_bf16"}
    monkeypatch.setattr(device, "reported_cpu_flags", lambda: set(zen5))
    monkeypatch.setattr(quantize, "cpu_flags", device.cpu_flags)
    monkeypatch.delenv(device.ONEDNN_LIMIT, raising=False)
    for limit in (device.ATEN_LIMIT, device.MKL_LIMIT):
        monkeypatch.delenv(limit, raising=False)
    device.cpu_has_fast_bf16.cache_clear()
    assert device.cpu_flags() == zen5 and not quantize.needs_reduced_range()
    for limit, left in {
        "AVX2": {"avx2"},
        "avx2_vnni": {"avx2", "avx_vnni"},
        "AVX512_CORE": {"avx2", "avx512f"},
        "AVX512_CORE_VNNI": {"avx2", "avx512f", "avx512_vnni"},
        "AVX512_CORE_BF16": {"avx2", "avx512f", "avx512_vnni", "avx512_bf16"},
        "AVX512_CORE_AMX": zen5,
        "DEFAULT": zen5,
    }.items():
        monkeypatch.setenv(device.ONEDNN_LIMIT, limit)
        device.cpu_has_fast_bf16.cache_clear()
        assert device.cpu_flags() == left, limit
        assert quantize.needs_reduced_range() == (limit in ("AVX2", "AVX512_CORE")), limit
        assert device.cpu_has_fast_bf16() == ("avx512_bf16" in left), limit
    monkeypatch.setenv(device.ONEDNN_LIMIT, "AVX2")
    monkeypatch.setenv(device.ATEN_LIMIT, "avx2")
    assert device.cpu_description().endswith(
        "AVX2 yes, AVX512-BF16 no, AVX512-VNNI no, AMX no (limited by ONEDNN_MAX_CPU_ISA=AVX2, ATEN_CPU_CAPABILITY=avx2)"
    )
    parts = []
    monkeypatch.setattr(quantize, "cache_key", lambda name, given: parts.append(given) or name)
    import torch

    model = torch.nn.Linear(2, 2)
    quantize.package_key(model, "m")
    monkeypatch.delenv(device.ATEN_LIMIT)
    quantize.package_key(model, "m")
    assert parts[0][:-1] == parts[1] and parts[0][-1] == "ATEN_CPU_CAPABILITY=avx2"
    device.cpu_has_fast_bf16.cache_clear()


def test_a_hub_that_answered_is_not_asked_again_for_a_minute(monkeypatch):
    """The CLI checks a hub id before torch loads and the load checks it again: one connection
    between them while the hub answers; an unreachable hub is asked every time, and said."""
    from nsfw_space.model import loading

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(loading, "_REACHED", {})
    monkeypatch.setattr(loading, "_in_cache", lambda source, kwargs: False)
    connections = []

    class Answered:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    def connect(address, timeout):
        connections.append(address)
        if answering:
            return Answered()
        raise OSError(111, "Connection refused")

    monkeypatch.setattr(loading.socket, "create_connection", connect)
    answering = False
    for _ in range(2):
        with pytest.raises(ModelLoadError, match="could not be reached"):
            loading.check_model_argument("someone/some-model")
    assert len(connections) == 2
    answering = True
    assert loading.locate_for_loading("someone/some-model", None) == ("someone/some-model", False)
    loading.check_model_argument("someone/some-model")
    assert len(connections) == 3
    monkeypatch.setattr(loading, "_REACHED", {key: value - 61 for key, value in loading._REACHED.items()})
    loading.check_model_argument("someone/some-model")  # a minute later: asked again
    assert len(connections) == 4
