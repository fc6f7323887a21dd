"""Valence/arousal derived from FER+ crowd votes: no FER+ image was ever rated for valence or arousal.

Each vote for an emotion places the face at that emotion's published coordinates; an image's target is the
vote-weighted mean, so a face 6/10 happy and 4/10 neutral sits 60 % of the way from the centre to *happy*.
The coordinates are the pleasure (valence) and arousal means, on -1..1, of the matching emotion terms in

    Russell, J. A. & Mehrabian, A. (1977). Evidence for a three-factor theory of emotions. Journal of Research
    in Personality 11(3), 273-294 (their table of 151 emotion terms rated for pleasure, arousal, dominance):
    happy (0.81, 0.51), surprised (0.40, 0.67), sad (-0.63, -0.27), angry (-0.51, 0.59), disgusted (-0.60, 0.35),
    fearful (-0.64, 0.60), contempt (-0.23, 0.31).

Neutral sits at the centre (0, 0), the scale's neutral point. Contempt votes count here (the term has published
coordinates) although contempt is not an expression class of this package; unknown and not-a-face votes say
nothing about affect and are dropped. Nothing is fitted to FER+ (or any evaluation data).

These targets are *derived*, not rated: they carry the vote distribution's information and the term norms'
placement, not a rater's judgement of the face's intensity, so their spread within a class is small. Treat a
model's VA trained on them as a circumplex reading of its expression, not as a rated-VA estimate.
"""

import numpy as np

from keras_mtanet.labels import UNANNOTATED_VA

# (valence, arousal) per FER+ vote column (keras_mtanet.data.ferplus.VOTE_NAMES order); None: no affect content.
VA_COORDINATES = {
    "neutral": (0.0, 0.0),
    "happiness": (0.81, 0.51),
    "surprise": (0.40, 0.67),
    "sadness": (-0.63, -0.27),
    "anger": (-0.51, 0.59),
    "disgust": (-0.60, 0.35),
    "fear": (-0.64, 0.60),
    "contempt": (-0.23, 0.31),
    "unknown": None,
    "NF": None,
}
SOURCE = "Russell & Mehrabian (1977), J. Research in Personality 11(3):273-294, emotion-term norms"


def derive_va(votes):
    """``(valence, arousal)`` from ten FER+ vote counts (or (N, 10)); -5 where no vote names an emotion.

    Example:
        >>> derive_va([6, 4, 0, 0, 0, 0, 0, 0, 0, 0])  # 6 neutral, 4 happiness votes
        array([0.324, 0.204], dtype=float32)
    """
    from keras_mtanet.data.ferplus import VOTE_NAMES

    votes = np.asarray(votes, np.float64)
    single = votes.ndim == 1
    votes = votes.reshape(-1, len(VOTE_NAMES))
    columns = [i for i, name in enumerate(VOTE_NAMES) if VA_COORDINATES[name] is not None]
    coords = np.asarray([VA_COORDINATES[VOTE_NAMES[i]] for i in columns], np.float64)
    counted = votes[:, columns]
    mass = counted.sum(axis=1, keepdims=True)
    va = np.where(mass > 0, counted @ coords / np.maximum(mass, 1e-12), UNANNOTATED_VA).astype(np.float32)
    return va[0] if single else va
