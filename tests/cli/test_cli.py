import argparse
import csv
import os
import platform
import subprocess
import sys

import cv2
import pytest

import keras_mtanet
from keras_mtanet.cli import build_parser, main, startup
from keras_mtanet.errors import UsageError
from keras_mtanet.inference import native_logs, records
from keras_mtanet.training import recipe


def test_version_flag(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"keras-mtanet {keras_mtanet.__version__}"


def test_user_errors_are_one_line_with_exit_2(capsys, tmp_path):
    code = main(["train", "--data", str(tmp_path / "missing"), "--format", "affwild2", "--output",
                 str(tmp_path / "run")])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err == f"keras-mtanet: error: {tmp_path / 'missing'}: Aff-Wild2 root not found (expected annotations/ " \
                  "and cropped_aligned/ in it)"
    assert main(["demo", "--model", "no_such_preset"]) == 2
    assert "not a preset name" in capsys.readouterr().err


def test_presets_lists_the_embedded_default(capsys):
    assert main(["presets"]) == 0
    out = capsys.readouterr().out
    assert "mtanet_se_resnet18_synth" in out and "embedded" in out


def test_demo_runs_the_embedded_preset_in_a_fresh_process(tmp_path):
    # A newcomer's environment: no log levels set (conftest sets TF_CPP_MIN_LOG_LEVEL for the test process).
    env = {**{k: v for k, v in os.environ.items() if k not in native_logs.QUIET_ENVIRONMENT}, "HF_HUB_OFFLINE": "1",
           "HF_ENDPOINT": "http://127.0.0.1:9"}
    result = subprocess.run([sys.executable, "-m", "keras_mtanet", "demo", "--output", str(tmp_path / "faces.csv"),
                             "--plot", str(tmp_path / "faces.png")], capture_output=True, text=True, timeout=300,
                            env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "input: scikit-image's astronaut photograph" in result.stdout
    with open(tmp_path / "faces.csv") as f:
        rows = list(csv.DictReader(f))
    # The photograph and its mirror image: two faces, found where they are, predicted alike.
    assert [int(r["face_detected"]) for r in rows] == [1, 1]
    left, right = rows
    assert abs(float(left["x"]) + float(left["w"]) / 2 - 222) < 15
    assert abs((1024 - float(right["x"]) - float(right["w"]) / 2) - 222) < 15
    assert abs(float(left["valence"]) - float(right["valence"])) < 0.3
    for row in rows:  # a smile, not a frown: the preset's calibrated thresholds, not 0.5
        assert (row["AU12"], row["AU4"], row["AU15"], row["AU20"]) == ("1", "0", "0", "0"), row
        assert (row["expression"], row["expression_prior"], row["au_threshold"]) == ("Happiness", "balanced", "preset")
    assert "unreliable for this preset (weak validation evidence): AU4, AU15, AU20" in result.stdout
    picture = cv2.imread(str(tmp_path / "faces.png"))
    assert picture.shape[:2] == (512 + 24, 1024)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["faces.csv", "faces.png"]  # nothing else written
    assert not native_lines(result.stderr), result.stderr

    result = subprocess.run([sys.executable, "-m", "keras_mtanet", "demo", "--synthetic", "--frames", "24",
                             "--output", str(tmp_path / "demo.csv")], capture_output=True, text=True, timeout=300,
                            env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "trained on: keras_mtanet synthetic cartoon faces" in result.stdout
    assert "ABAW scores on this video: ccc_valence" in result.stdout
    lines = (tmp_path / "demo.csv").read_text().splitlines()
    assert len(lines) == 25 and lines[0] == ",".join(records.COLUMNS)  # predict's record format
    assert not native_lines(result.stderr), result.stderr


# What TensorFlow, Abseil and TensorFlow Lite print from C++ when they start (seen on Linux x86-64, TF 2.21).
NATIVE_MARKERS = ("absl::InitializeLog", "oneDNN custom operations", "cuda drivers", "cuInit", "cpu_feature_guard",
                  "XNNPACK delegate")


def native_lines(stderr):
    return [line for line in stderr.splitlines() if any(marker in line for marker in NATIVE_MARKERS)]


def test_the_command_keeps_native_start_up_logs_quiet_unless_verbose(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in native_logs.QUIET_ENVIRONMENT}
    command = [sys.executable, "-m", "keras_mtanet"]
    # train --help loads Keras (its choices come from the recipe), so TensorFlow starts in both runs.
    quiet = subprocess.run([*command, "train", "--help"], capture_output=True, text=True, timeout=300, env=env,
                           cwd=tmp_path)
    assert quiet.returncode == 0 and quiet.stderr == "", quiet.stderr
    verbose = subprocess.run([*command, "--verbose", "train", "--help"], capture_output=True, text=True, timeout=300,
                             env=env, cwd=tmp_path)
    assert verbose.returncode == 0 and verbose.stdout == quiet.stdout
    if sys.platform == "linux" and platform.machine() == "x86_64":  # where TensorFlow prints its oneDNN notice
        assert native_lines(verbose.stderr), verbose.stderr


def test_verbose_leaves_the_environment_alone(monkeypatch, capsys):
    for name in native_logs.QUIET_ENVIRONMENT:
        monkeypatch.delenv(name, raising=False)
    assert main(["--verbose", "presets"]) == 0 and main(["presets", "--verbose"]) == 0
    assert not any(name in os.environ for name in native_logs.QUIET_ENVIRONMENT)
    assert main(["presets"]) == 0
    assert {name: os.environ[name] for name in native_logs.QUIET_ENVIRONMENT} == native_logs.QUIET_ENVIRONMENT
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "1")  # what the user set wins
    assert main(["presets"]) == 0 and os.environ["TF_CPP_MIN_LOG_LEVEL"] == "1"


def test_only_the_command_itself_is_quieted(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["/venv/bin/keras-mtanet", "demo"])
    assert startup.launched_as_command()
    monkeypatch.setattr(sys, "argv", ["-m", "demo"])
    monkeypatch.setattr(sys, "orig_argv", ["python", "-m", "keras_mtanet.cli", "demo"])
    assert startup.launched_as_command()
    monkeypatch.setattr(sys, "argv", ["train.py"])
    monkeypatch.setattr(sys, "orig_argv", ["python", "train.py", "--verbose"])
    assert not startup.launched_as_command()
    assert startup.verbose_requested(["--verbose", "demo"]) and startup.verbose_requested(["demo", "--verbose"])
    assert not startup.verbose_requested(["predict", "--", "--verbose"])


def test_native_log_lines_are_dropped_and_the_rest_kept(capfd):
    with native_logs.native_logs_dropped():
        os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
                    b"I0000 00:00:1795697422.371307    8353 port.cc:153] oneDNN custom operations are on.\n"
                    b"W0000 00:00:1795697422.371616    8353 foo.cc:31] a warning\n"
                    b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n"
                    b"E0000 00:00:1795697426.445970    8353 bar.cc:52] a real error\n"
                    b"UserWarning: something Python said\n")
    assert capfd.readouterr().err == ("E0000 00:00:1795697426.445970    8353 bar.cc:52] a real error\n"
                                      "UserWarning: something Python said\n")


def test_choices_come_from_the_modules():
    from keras_mtanet import export
    from keras_mtanet.data import ferplus
    from keras_mtanet.data.formats import formats_for
    from keras_mtanet.inference import detection, runtimes
    from keras_mtanet.model import config

    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices

    def option(command, flag):
        return next(a for a in commands[command]._actions if flag in a.option_strings)

    assert tuple(option("predict", "--detector").choices) == detection.DETECTORS
    # None, so that an explicit --detector with --no-detect is seen; run_predict fills in the module's default
    assert f"default {detection.DEFAULT_DETECTOR};" in option("predict", "--detector").help
    assert tuple(option("predict", "--runtime").choices) == runtimes.RUNTIMES
    assert set(option("predict", "--precision").choices) == {p for ps in runtimes.PRECISIONS.values() for p in ps}
    assert tuple(option("train", "--format").choices) == formats_for("train")
    assert tuple(option("train", "--backbone").choices) == tuple(config.BACKBONES)
    assert tuple(option("train", "--strategy").choices) == recipe.STRATEGIES
    assert tuple(option("train", "--distribution").choices) == recipe.DISTRIBUTIONS
    assert tuple(option("export", "--format").choices) == export.EXPORT_FORMATS
    assert tuple(option("evaluate", "--format").choices) == formats_for("evaluate")
    assert tuple(option("teach", "--format").choices) == formats_for("teach")
    assert tuple(option("teach", "--splits").choices) == ferplus.SPLITS


def test_top_level_help_loads_no_command_module():
    code = ("import sys\nfrom keras_mtanet.cli import build_parser\nbuild_parser(None if len(sys.argv) < 2 "
            "else sys.argv[1]).format_help()\n"
            "print(' '.join(sorted(m for m in sys.modules if m.startswith('keras_mtanet.'))))")
    # keras_mtanet.inference.native_logs (the command's quiet start) is standard library only.
    heavy = ("keras_mtanet.inference.predictor", "keras_mtanet.inference.detection", "keras_mtanet.model",
             "keras_mtanet.training", "keras_mtanet.export", "keras_mtanet.teachers", "keras_mtanet.evaluate",
             "keras_mtanet.cli.predict", "keras_mtanet.cli.demo")
    loaded = subprocess.run([sys.executable, "-c", code, "presets"], capture_output=True, text=True,
                            timeout=300).stdout.split()
    assert loaded and not [m for m in loaded if m.startswith(heavy)], loaded
    loaded = subprocess.run([sys.executable, "-c", code, "predict"], capture_output=True, text=True,
                            timeout=300).stdout.split()
    assert "keras_mtanet.inference.detection" in loaded and "keras_mtanet.training.run" not in loaded


def test_command_line_mistakes_are_usage_errors(capsys, tmp_path):
    from keras_mtanet.cli import demo, export, predict

    with pytest.raises(UsageError, match="--frames applies to --synthetic only"):
        demo.run(build_parser("demo").parse_args(["demo", "--frames", "5"]))
    with pytest.raises(UsageError, match="^--image and --plot apply to the photo demo, not --synthetic$"):
        demo.run(build_parser("demo").parse_args(["demo", "--synthetic", "--image", "a.jpg", "--plot",
                                                           str(tmp_path / "p.png")]))
    with pytest.raises(UsageError, match="^--plot applies to the photo demo, not --synthetic$"):
        demo.run(build_parser("demo").parse_args(["demo", "--synthetic", "--plot", "p.png"]))
    with pytest.raises(UsageError, match="--int8 applies to --format tflite only"):
        export.run(build_parser("export").parse_args(["export", "--format", "onnx", "--int8", "--output",
                                                               str(tmp_path / "m.onnx")]))
    args = build_parser("predict").parse_args(["predict", str(tmp_path), "--output", str(tmp_path / "o.csv"),
                                               "--runtime", "onnxruntime", "--precision", "bfloat16"])
    with pytest.raises(UsageError, match="--precision bfloat16: the onnxruntime runtime runs in float32"):
        predict.run(args)
    args = build_parser("predict").parse_args(["predict", str(tmp_path / "nothing*.jpg"), "--output",
                                               str(tmp_path / "o.csv")])
    with pytest.raises(UsageError, match="no file matches"):
        predict.run(args)


def test_cli_error_has_no_traceback_in_a_real_process(tmp_path):
    result = subprocess.run([sys.executable, "-m", "keras_mtanet", "publish", str(tmp_path / "nope"), "--repo-id",
                             "org/x"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == f"keras-mtanet: error: {tmp_path / 'nope'}: no such preset folder"


def test_presets_lists_a_malformed_registry_entry_as_unusable(tmp_path, monkeypatch, capsys):
    from keras_mtanet.cli import main

    bad = tmp_path / "bad_entry"
    bad.mkdir()
    (bad / "preset.json").write_text('{"description": 5}')
    monkeypatch.setenv("KERAS_MTANET_ZOO_PATH", str(tmp_path))
    assert main(["presets"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(line.startswith("bad_entry") and "(unusable)" in line for line in lines), lines
    assert any(line.startswith("mtanet_se_resnet18_ferplus_112") for line in lines)


@pytest.mark.parametrize("argv, shown", [
    (["predict", "", "--output", "o.csv"], "INPUTS"),
    (["predict", "photo.jpg", "--model", "", "--output", "o.csv"], "--model"),
    (["predict", "photo.jpg", "--output", ""], "--output"),
    (["train", "--data", "d", "--format", "synthetic", "--output", "r", "--config", ""], "--config"),
    (["train", "--data", "d", "--format", "synthetic", "--output", ""], "--output"),
    (["train", "--data", "", "--format", "synthetic", "--output", "r"], "--data"),
    (["export", "--format", "tflite", "--output", ""], "--output"),
    (["export", "--model", "", "--format", "tflite", "--output", "m.tflite"], "--model"),
    (["demo", "--output", ""], "--output"),
    (["evaluate", "--data", "d", "--metrics", ""], "--metrics"),
])
def test_an_empty_value_is_an_error_never_the_current_folder(argv, shown, tmp_path, monkeypatch, capsys):
    from keras_mtanet.training import run as train

    (tmp_path / "photo.jpg").write_bytes(cv2.imencode(".jpg", cv2.UMat(8, 8, cv2.CV_8UC3).get())[1].tobytes())
    before = sorted(os.listdir(tmp_path))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(train, "train", lambda *a, **k: pytest.fail("training started"))
    assert main(argv) == 2
    assert capsys.readouterr().err == f"keras-mtanet: error: {shown}: empty value (''); give a name\n"
    assert sorted(os.listdir(tmp_path)) == before


def test_the_api_refuses_empty_names_too(tmp_path, monkeypatch):
    from keras_mtanet import PresetError, load_pretrained
    from keras_mtanet.inference import sources

    (tmp_path / "photo.jpg").write_bytes(b"not read")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(PresetError) as info:
        load_pretrained("")
    assert str(info.value) == "empty preset name; give a preset name, hf://ORG/REPO or a preset folder (None: " \
                              "the default preset)"
    with pytest.raises(UsageError) as info:
        recipe.load_config("")
    assert str(info.value) == "empty training config name; give a JSON file (None: the default recipe)"
    assert sources.expand_inputs([""]) == \
        ([], ["'': empty input name; give an image, folder, glob, video or webcam index"])


LONG, LONG_NAME = "a" * 5000, "b" * 300


@pytest.mark.parametrize("argv, name", [
    (["predict", "x.jpg", "--model", LONG, "--output", "o.csv"], LONG),
    (["predict", "x.jpg", "--output", LONG_NAME + ".csv"], LONG_NAME + ".csv"),
    (["train", "--data", "d", "--format", "synthetic", "--output", LONG_NAME], LONG_NAME),
    (["export", "--format", "onnx", "--output", LONG_NAME + ".onnx"], LONG_NAME + ".onnx"),
    (["demo", "--output", LONG_NAME + ".csv"], LONG_NAME + ".csv"),
])
def test_a_name_too_long_is_one_line(argv, name, tmp_path, monkeypatch, capsys):
    (tmp_path / "x.jpg").write_bytes(b"")
    monkeypatch.chdir(tmp_path)
    if argv[0] == "export":  # export names its output by its absolute path
        name = str(tmp_path.resolve() / name)
    assert main(argv) == 2
    assert capsys.readouterr().err == f"keras-mtanet: error: {name[:60]}...: name too long ({len(name)} characters)\n"
    assert os.listdir(tmp_path) == ["x.jpg"]


def test_a_long_input_name_is_a_problem_of_its_own(tmp_path, monkeypatch, capsys):
    from keras_mtanet.inference import sources

    (tmp_path / "x.jpg").write_bytes(b"")
    monkeypatch.chdir(tmp_path)
    found, problems = sources.expand_inputs([LONG + ".jpg", "x.jpg"])
    assert [s.name for s in found] == ["x.jpg"]
    assert problems == [f"{'a' * 60}...: name too long (5004 characters; File name too long)"]
    assert main(["predict", LONG + ".jpg", "--output", "o.csv"]) == 2
    assert capsys.readouterr().err == \
        f"keras-mtanet: error: {'a' * 60}...: name too long (5004 characters; File name too long)\n"


def test_a_negative_demo_seed_is_a_usage_error(capsys):
    assert main(["demo", "--synthetic", "--seed", "-1"]) == 2
    assert capsys.readouterr().err == \
        "keras-mtanet: error: --seed -1: give a whole number from 0 (numpy seeds are not negative)\n"


def test_a_config_nested_too_deep_is_one_line(tmp_path, capsys):
    config = tmp_path / "deep.json"
    config.write_text("[" * 100_000 + "]" * 100_000)
    assert main(["train", "--data", str(tmp_path / "d"), "--format", "synthetic", "--output", str(tmp_path / "r"),
                 "--config", str(config)]) == 2
    assert capsys.readouterr().err == f"keras-mtanet: error: {config}: not a training config (JSON nested too deep)\n"
    assert sorted(os.listdir(tmp_path)) == ["deep.json"]


def test_contradictory_or_idle_options_are_usage_errors(tmp_path, capsys):
    missing = str(tmp_path / "missing.jpg")
    for argv, message in [
        (["predict", missing, "--output", "o.csv", "--progress", "--quiet"],
         "--progress and --quiet contradict each other; give one"),
        (["predict", missing, "--output", "o.csv", "--no-detect", "--detector", "mtcnn"],
         "--detector mtcnn does nothing with --no-detect (inputs are face crops); give one"),
        (["export", "--format", "onnx", "--output", str(tmp_path / "no" / "m.onnx"), "--calibration", str(tmp_path)],
         "--calibration applies to --int8 only (float exports need no calibration)"),
    ]:
        assert main(argv) == 2
        assert capsys.readouterr().err == f"keras-mtanet: error: {message}\n"
    assert os.listdir(tmp_path) == []


def test_a_config_over_the_size_limit_says_so(tmp_path, capsys):

    config = tmp_path / "big.json"
    config.write_text('{"description": "' + "x" * 2_000_000 + '"}')  # valid JSON, 2 MB
    with pytest.raises(UsageError) as info:
        recipe.load_config(config)
    assert str(info.value) == f"{config}: training config larger than 1024 KiB; refused"


def test_control_characters_in_names_are_escaped_in_error_lines(tmp_path, capsys):
    from keras_mtanet import files

    assert files.printable("a\x1b[31mb\x07\nc\td") == "a\\x1b[31mb\\x07\\nc\\td"
    assert files.printable(os.fsdecode(b"x\xff\x1b.jpg")) == "x\\xff\\x1b.jpg"
    assert files.printable("café 中") == "café 中"
    name = str(tmp_path / "evil\x1b]0;owned\x07\nkeras-mtanet: fake.jpg")
    assert main(["predict", name, "--output", str(tmp_path / "o.csv")]) == 2
    err = capsys.readouterr().err
    assert err == f"keras-mtanet: error: {tmp_path}/evil\\x1b]0;owned\\x07\\nkeras-mtanet: fake.jpg: no such file or " \
                  "folder\n"


def test_plot_that_names_an_input_is_refused_and_the_photo_kept(tmp_path, capsys, photo):
    from keras_mtanet.presets import registry

    image = tmp_path / "photo.png"
    assert cv2.imwrite(str(image), cv2.cvtColor(photo, cv2.COLOR_RGB2BGR))
    (tmp_path / "sub").mkdir()
    os.symlink(image, tmp_path / "link.png")
    before = image.read_bytes()
    for plot in (image, tmp_path / "sub" / ".." / "photo.png", tmp_path / "link.png"):
        assert main(["predict", str(tmp_path), "--model", registry.SYNTHETIC_PRESET, "--output",
                     str(tmp_path / "out.csv"), "--plot", str(plot)]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"keras-mtanet: error: {plot}: --plot is the input ") and \
            err.endswith("; writing it would replace that file (choose another name)"), err
        assert main(["demo", "--model", registry.SYNTHETIC_PRESET, "--image", str(image), "--plot", str(plot)]) == 2
        assert capsys.readouterr().err.strip() == (f"keras-mtanet: error: {plot}: --plot is the input {image}; "
                                                   "writing it would replace that file (choose another name)")
    assert image.read_bytes() == before and not (tmp_path / "out.csv").exists()


def test_a_train_that_fails_before_its_first_epoch_leaves_no_run_folder(tmp_path, capsys):
    command = ["train", "--data", str(tmp_path / "missing"), "--format", "affwild2", "--output"]
    assert main(command + [str(tmp_path / "new" / "run")]) == 2
    assert "Aff-Wild2 root not found" in capsys.readouterr().err
    assert not (tmp_path / "new" / "run").exists()
    (tmp_path / "mine").mkdir()  # a folder the user had is kept
    assert main(command + [str(tmp_path / "mine")]) == 2
    assert (tmp_path / "mine").is_dir()
