import subprocess
import sys

import keras_mtanet
from keras_mtanet.cli import main


def test_version_flag(capsys):
    try:
        main(["--version"])
    except SystemExit as exit_:
        assert exit_.code == 0
    assert capsys.readouterr().out.strip() == f"keras-mtanet {keras_mtanet.__version__}"


def test_module_entry_point_runs():
    result = subprocess.run([sys.executable, "-m", "keras_mtanet", "--version"], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0
    assert keras_mtanet.__version__ in result.stdout
