"""Presets: the registry of named presets, the folder format, model cards, the checks of untrusted presets, Hub
transfer and publishing. Model classes are found in the Keras registry, never imported."""
