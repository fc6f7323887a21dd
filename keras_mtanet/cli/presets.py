"""``keras-mtanet presets``: list the named presets."""


def add_arguments(p):
    pass


def run(args):
    from keras_mtanet.files import printable
    from keras_mtanet.presets.registry import list_presets

    for name, entry in list_presets().items():
        if "error" in entry:  # a malformed registry entry: listed with its one-line problem
            print(f"{name:<32} {'(unusable)':<40} {printable(entry['error'])}")
            continue
        where = "embedded" if entry.get("embedded") else f"{entry['repo_id']}@{entry['revision'][:12]}"
        print(f"{name:<32} {where:<40} {entry.get('description', '')}")
    return 0
