"""Label names and the Aff-Wild2 codes for unannotated frames, defined once for the whole package."""

VA_NAMES = ("valence", "arousal")
AU_NAMES = ("AU1", "AU2", "AU4", "AU6", "AU12", "AU15", "AU20", "AU25")
EXPR_NAMES = ("Neutral", "Anger", "Disgust", "Fear", "Happiness", "Sadness", "Surprise")

# Aff-Wild2 (ABAW 2020) writes these values for frames a task did not annotate.
UNANNOTATED_VA = -5.0
UNANNOTATED_AU = -1
UNANNOTATED_EXPR = -1

# A VA target below this is treated as unannotated; real values lie in [-1, 1].
VA_VALID_MIN = -2.0

TASKS = ("va", "au", "expr")

# An AU is "on" when its probability is above this (the ABAW AU metrics, the predictor's au columns, presets).
AU_THRESHOLD = 0.5
