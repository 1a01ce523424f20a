"""Config: defaults, overrides, unknown keys and cross-field checks."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamproc.config import load_config
from streamproc.errors import ConfigError


def test_defaults_and_overrides() -> None:
    cfg = load_config(None, ["detector.kind=haar", "embedder.batch_size=8"])
    assert (cfg.detector.kind, cfg.embedder.batch_size, cfg.align.mode) == ("haar", 8, "crop")


def test_file_and_override_merge(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("align:\n  margin: 0.3\n  image_size: 128\n")
    cfg = load_config(path, ["align.margin=0.1"])
    assert (cfg.align.margin, cfg.align.image_size) == (0.1, 128)


@pytest.mark.parametrize(
    ("yaml_text", "overrides", "message"),
    [
        ("", ["detector.colour=red"], "detector.colour"),
        ("bogus: 1\n", [], "bogus"),
        ("", ["embedder.batch_size=0"], "batch_size"),
        ("", ["align.mode=similarity", "detector.kind=haar"], "needs landmarks"),
        ("- a list\n", [], "expected a mapping"),
        ("key: [unclosed\n", [], "not valid YAML"),
        ("", ["novalue"], "expected key.path=value"),
        ("", ['runtime.embedder_resources={"GPU": 1}'], "CPUs and GPUs have their own options"),
        ("", ['runtime.stream_resources={"decode": 0}'], "amounts > 0"),
        ("", ["gallery.retry_s=-1"], "retry_s"),
    ],
)
def test_bad_config(tmp_path: Path, yaml_text: str, overrides: list[str], message: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml_text)
    with pytest.raises(ConfigError, match=message):
        load_config(path, overrides)


def test_missing_file() -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config("/nonexistent/config.yaml")


# Settings that used to pass validation and then crash (issue 16 #6, #9): each is refused up front.
@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("align.image_size=100000", r"align\.image_size"),
        ("embedder.threads=100000", r"embedder\.threads"),
        ("embedder.device=cuda:7", r"embedder\.device: .*cuda:7"),
        ("detector.device=meta", r"detector\.device: .*meta"),
        ("detector.device=gpu", r"detector\.device: .*gpu"),
        ("detector.thresholds=[2, -1, .nan]", r"detector\.thresholds"),
        ("detector.thresholds=[0.6, 0.7, .nan]", r"detector\.thresholds"),
        ("detector.thresholds=[0.6, 0.7, 1.5]", r"detector\.thresholds"),
        ("image.max_pixels=0", r"image\.max_pixels"),
    ],
)
def test_settings_that_would_crash_later_are_refused(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        load_config(None, [override])
    assert "\n" not in str(info.value)


def test_cpu_devices_pass() -> None:
    cfg = load_config(None, ["embedder.device=cpu", "detector.device=cpu", "embedder.threads=4"])
    assert (cfg.embedder.device, cfg.detector.device) == ("cpu", "cpu")


def test_config_path_that_is_a_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is a directory, not a config file"):
        load_config(tmp_path)


def test_configs_paths_name_the_shipped_files_from_any_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from streamproc.training.config import load_train_config

    monkeypatch.chdir(tmp_path)  # as after `pip install .`: no configs/ folder here
    assert load_config("configs/default.yaml") == load_config(None)
    assert load_train_config("configs/train/finetune-irv1.yaml").version == "ft1"
    with pytest.raises(ConfigError, match="does not exist"):
        load_config("configs/nonexistent.yaml")
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "default.yaml").write_text("detector: {kind: haar}\n")
    assert load_config("configs/default.yaml").detector.kind == "haar"  # a file here comes first
