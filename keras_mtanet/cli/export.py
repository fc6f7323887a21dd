"""``keras-mtanet export``: export a preset for serving (formats: see export --help)."""

from keras_mtanet.cli.common import MODEL_HELP


def add_arguments(p):
    from keras_mtanet.export import EXPORT_FORMATS

    p.add_argument("--model", help=MODEL_HELP)
    p.add_argument("--format", required=True, choices=EXPORT_FORMATS)
    p.add_argument("--output", required=True, help="SavedModel folder, or the exported file")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing --output (written beside it first, then swapped in)")
    p.add_argument("--int8", action="store_true", help="TFLite with int8 weights and activations")
    p.add_argument("--calibration", help="folder of aligned face crops to calibrate --int8 (default: generated "
                                         "synthetic faces, right only for synthetic presets)")


def run(args):
    from keras_mtanet import export
    from keras_mtanet.errors import UsageError
    from keras_mtanet.inference import export_cache
    from keras_mtanet.model.task import load_pretrained

    if args.int8 and args.format != "tflite":
        raise UsageError("--int8 applies to --format tflite only")
    if args.calibration is not None and not args.int8:
        raise UsageError("--calibration applies to --int8 only (float exports need no calibration)")
    export.check_export_path(args.output, args.format, args.overwrite)  # before the model loads
    model = load_pretrained(args.model)
    calibration = None
    if args.int8:
        calibration = export_cache.calibration_images(model, args.calibration)
        if args.calibration is None:
            print("int8 calibration: generated synthetic faces (use --calibration with aligned crops of real "
                  "faces for a model trained on real data)")
    path = export.export(model, args.output, args.format, int8=args.int8, calibration=calibration,
                         overwrite=args.overwrite)
    size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else path.stat().st_size
    print(f"{args.format}{' int8' if args.int8 else ''}: {path} ({size / 1e6:.1f} MB); input 'image' "
          f"(N, {model.input_shape[1]}, {model.input_shape[2]}, 3) float32 RGB in [0, 255]; outputs va, au, expr")
    return 0
