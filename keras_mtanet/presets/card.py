"""The model card of a preset: a ``huggingface_hub.ModelCard`` (README.md with Hub YAML front matter) written from
the preset's metadata."""

CARD_TAGS = ("keras", "keras-mtanet", "facial-affect", "action-units", "valence-arousal",
             "facial-expression-recognition")



_CARD_ORDER = ["library_name", "license", "license_name", "pipeline_tag", "tags", "datasets", "metrics"]



def card_metrics(metrics):
    """The Hub metric ids for the metrics a preset reports: ``ccc`` (valence/arousal), ``f1``, ``accuracy``."""
    keys = [str(k) for k in metrics or {}]
    found = {"ccc": any("ccc" in k or k.startswith("va") for k in keys), "f1": any("f1" in k for k in keys),
             "accuracy": any("acc" in k for k in keys)}
    return [name for name, present in found.items() if present]



def make_model_card(meta, title, intended_use=None, limitations=None, spec=None):
    """The model card of a preset, from its metadata: a ``huggingface_hub.ModelCard`` whose YAML front matter
    (``ModelCardData``: library, license, task, tags, datasets, metric ids) the Hub reads; ``str(card)`` is
    the README.md. ``license`` / ``license_name`` in the metadata override the package's Apache-2.0 (e.g. for
    weights under a data set's terms). ``spec``: what the card tells users to load (default ``title``)."""
    from huggingface_hub import ModelCard, ModelCardData

    metrics = meta.get("metrics") or {}
    data = ModelCardData(library_name="keras", license=meta.get("license") or "apache-2.0",
                         license_name=meta.get("license_name"), pipeline_tag="image-classification",
                         tags=list(CARD_TAGS), datasets=list(meta.get("datasets") or []) or None,
                         metrics=card_metrics(metrics) or None)
    lines = [f"# {title}", "", meta.get("description") or "A keras_mtanet MTANet preset.", "",
             "## Model", "",
             (f"MTANet (Zhang & Gu, arXiv:2002.00606) with a {meta.get('backbone')} backbone, input "
             f"{meta['input_size'][0]}x{meta['input_size'][1]} RGB in [0, 255]; outputs valence/arousal "
             f"({', '.join(meta['va_names'])}), {len(meta['au_names'])} AU probabilities "
             f"({', '.join(meta['au_names'])}) and {len(meta['expression_names'])} expression "
             f"probabilities ({', '.join(meta['expression_names'])}). {meta.get('parameters', 0):,} parameters."), "",
             "## Trained on", "", str(meta.get("training_data")), "",
             "## Intended use", "", intended_use or "Research on facial affect estimation.", "",
             "## Limitations", "", limitations or "Not validated for decisions about people.", ""]
    if metrics:
        lines += ["## Metrics", "", "| metric | value |", "| --- | --- |"]
        lines += [f"| {k} | {v:.3f} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in metrics.items()]
        lines.append("")
    lines += ["## Use", "", "```python", "import keras_mtanet", "",
              f"model = keras_mtanet.load_pretrained({spec or title!r})", "```", ""]
    return ModelCard(f"---\n{data.to_yaml(original_order=_CARD_ORDER)}\n---\n\n" + "\n".join(lines))



def model_card_text(meta, title, intended_use=None, limitations=None, spec=None):
    """``make_model_card`` as README.md text."""
    return str(make_model_card(meta, title, intended_use, limitations, spec))
