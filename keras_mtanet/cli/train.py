"""``keras-mtanet train``: train MTANet with model.fit and write a preset to --output."""


def add_arguments(p):
    from keras_mtanet.data.formats import formats_for
    from keras_mtanet.model.config import BACKBONES, SETTINGS
    from keras_mtanet.training.recipe import DISTRIBUTIONS, STRATEGIES

    p.add_argument("--data", required=True, help="data root (synthetic: created if missing)")
    p.add_argument("--format", required=True, choices=formats_for("train"))
    p.add_argument("--labels", metavar="LABELS.csv",
                   help="ferplus: the teacher label cache from keras-mtanet teach (AU and valence/arousal targets; "
                        "without it FER+ trains expressions only)")
    p.add_argument("--output", required=True, help="run folder; ends up holding a loadable preset")
    p.add_argument("--config", help="JSON training config (see keras_mtanet/presets/registry/*/train.json); "
                                    "flags override it")
    p.add_argument("--init", metavar="PRESET",
                   help="start from a preset's weights (name, hf://ORG/REPO[@REV] or folder); its architecture is "
                        "used, its heads too where the label sets match")
    p.add_argument("--backbone", choices=tuple(BACKBONES))
    p.add_argument("--input-size", type=int)
    p.add_argument("--width", type=float,
                   help=f"multiplier on the backbone's filter counts, {SETTINGS['width'].wanted()} (1.0: standard)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--strategy", choices=STRATEGIES,
                   help="tf.distribute (TensorFlow backend): mirrored: local devices; multiworker: the cluster in "
                        "TF_CONFIG")
    p.add_argument("--distribution", choices=DISTRIBUTIONS,
                   help="keras.distribution (JAX backend): data-parallel over this process's devices, and over "
                        "processes joined by keras.distribution.initialize")
    p.add_argument("--mixed-precision", action="store_true", default=None,
                   help="bfloat16 compute on CPU, float16 with loss scaling on GPU")
    p.add_argument("--resume", action="store_true",
                   help="require an interrupted run to continue (one is always continued when present)")
    p.add_argument("--no-tensorboard", action="store_true")


def run(args):
    from keras_mtanet import files
    from keras_mtanet.errors import UsageError
    from keras_mtanet.training import recipe
    from keras_mtanet.training import run as train

    config = recipe.load_config(args.config, backbone=args.backbone, input_size=args.input_size, width=args.width,
                                epochs=args.epochs, batch_size=args.batch_size, seed=args.seed,
                                strategy=args.strategy, distribution=args.distribution,
                                mixed_precision=args.mixed_precision)
    try:
        train.train(config, args.data, args.format, args.output, resume=args.resume,
                    tensorboard=not args.no_tensorboard, labels=args.labels, init=args.init)
    except Exception as error:  # a full disk while a checkpoint, log or the preset is written: one line
        reason = files.disk_failure(error)
        if reason is None:
            raise
        raise UsageError(f"{files.printable(args.output)}: cannot write ({reason}); the same command resumes the "
                         "run once there is room") from None
    return 0
