"""The data formats the package reads, and which commands take each: one table for ``train``, ``evaluate`` and
``teach`` (their ``--format`` choices)."""

# format -> (its reader, the commands that read it). "synthetic" is the Aff-Wild2 layout that train generates
# (keras_mtanet.data.synthetic) when the data root does not exist yet.
DATA_FORMATS = {
    "affwild2": ("keras_mtanet.data.affwild2", ("train", "evaluate")),
    "affectnet": ("keras_mtanet.data.affectnet", ("train",)),
    "ferplus": ("keras_mtanet.data.ferplus", ("train", "teach")),
    "synthetic": ("keras_mtanet.data.synthetic", ("train",)),
    "genki4k": ("keras_mtanet.data.genki4k", ("train",)),
    "facial_expressions": ("keras_mtanet.data.facial_expressions", ("train",)),
}


def formats_for(command):
    """The data formats ``command`` (``"train"``, ``"evaluate"``, ``"teach"``) reads, in the table's order."""
    return tuple(name for name, (_, commands) in DATA_FORMATS.items() if command in commands)
