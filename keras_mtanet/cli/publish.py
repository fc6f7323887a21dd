"""``keras-mtanet publish``: publish a preset folder to the Hugging Face Hub."""


def add_arguments(p):
    p.add_argument("run_dir", help="a preset folder, e.g. a finished training run")
    p.add_argument("--repo-id", required=True, help="ORG/NAME on the Hub")
    p.add_argument("--tag", help="tag the new commit")
    p.add_argument("--private", action="store_true", help="create the repo private")
    p.add_argument("--endpoint", help="Hub URL (default: HF_ENDPOINT or huggingface.co)")
    p.add_argument("--description", default="", help="description for the printed registry entry")


def run(args):
    from keras_mtanet.files import dump_json
    from keras_mtanet.model import task  # noqa: F401  (registers MTANet, the class presets name)
    from keras_mtanet.presets import publish, registry

    sha = publish.publish(args.run_dir, args.repo_id, tag=args.tag, private=args.private or None,
                      endpoint=args.endpoint)
    print(f"published {args.run_dir} to {args.repo_id} at commit {sha}")
    print("registry entry (keras_mtanet/presets/registry/<name>/preset.json):")
    print(dump_json(registry.registry_entry(args.run_dir, args.repo_id, sha, args.description)), end="")
    return 0
