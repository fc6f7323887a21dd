"""MediaPipe blendshapes and landmark measurements -> probabilities of the 8 AUs (the AU teacher's mapping).

There are no AU labels for FER+, so each AU's mapping was fitted where FACS says the AU must show: the
EMFACS prototypes of the basic expressions (happiness AU6+12; surprise AU1+2+25(+26); sadness AU1+4+15;
fear AU1+2+4+5+20+25; anger AU4+5+7+23; disgust AU9+15+16). For each AU, a logistic regression (class-balanced)
separates FER+ *train* faces whose majority expression shows the AU in its prototype from neutral faces
(majority share at least one half, faces the landmarker found), on the features anatomically tied to the AU. So
``p`` is "how much this face looks like one showing the AU rather than a neutral face"; 0.5 is the balanced
boundary. Nothing was fitted on FER+ valid or test: valid chose between candidate features, test only reports.

Per AU, the features kept, and the valid ROC AUC (prototype faces vs neutral faces) of the mapping against the
single blendshape the issue proposed as a starting point:

====  =====================================  ==========================================  ===========
AU    features                               why                                         valid AUC
====  =====================================  ==========================================  ===========
AU1   browInnerUp                            the inner brow raiser itself; adding the     0.657
                                             brow height got a sign against anatomy
AU2   browOuterUp (mean of both sides)       max of the sides 0.740; the brow height      0.760
                                             again came out with the wrong sign
AU4   browDown, brow_inner, brow_gap         brows lowered *and* drawn together; both     0.607 (0.578)
                                             geometry terms got the anatomical sign
AU6   log10 cheekSquint, lower_lid           cheekSquint barely fires (1e-7..1e-5) but    0.875 (0.810)
                                             ranks; the raised lower lid is AU6's sign
AU12  mouthSmile (mean)                      one feature separates happy faces            0.973
AU15  mouthFrown (mean)                      corner geometry got a sign against anatomy   0.576
AU20  mouthStretch, gated by 1 - p(AU12)     see below                                   0.668 (0.591)
AU25  jawOpen, lip_gap                       lips part with or without a jaw drop         0.894 (0.890)
====  =====================================  ==========================================  ===========

AU20: mouthStretch fires as much in smiles (63 % of valid happy faces above 0.5) as in fear, because the lip
corners are pulled sideways in both; FACS's AU20 stretches them *without* raising them, so the stretch seen with
a smile is given to AU12: ``p20 = sigmoid(stretch fit) * (1 - p12)``. Its AUC is fear against neutral and
happy faces (the ungated fit: 0.591 there, 0.737 against neutral only); gated, 5 % of happy and of neutral faces
and 13 % of fear faces are active, where FER+ fear faces' stretched lips often read as smiles too.

Weak AUs (AU1, AU4, AU15: AUC 0.58-0.66) give probabilities near 0.5, i.e. little supervision; the 48 px FER+
faces are too small for the landmarker to see these brow and lip-corner movements reliably. AU6 leans on the
raised lower lid, which the lid tightener (AU7, not one of the 8) raises too: on FER+ test 57 % of angry and 46 %
of sad faces get AU6 (82 % of happy, 20 % of neutral). ``benchmarks/teacher_agreement.py`` prints the full table.
"""

import math

import numpy as np

from keras_mtanet.labels import AU_NAMES

_PAIRED = ("browOuterUp", "browDown", "cheekSquint", "mouthSmile", "mouthFrown", "mouthStretch")

# Fitted on FER+ train (see the module docstring); (feature, weight) pairs and a bias per AU.
AU_MODELS = {
    "AU1": ((("browInnerUp", 2.2039),), -0.6021),
    "AU2": ((("browOuterUp", 3.8692),), -1.4690),
    "AU4": ((("browDown", 0.2740), ("brow_inner", -4.7347), ("brow_gap", -7.8001)), 3.0440),
    "AU6": ((("log10_cheekSquint", 2.8211), ("lower_lid", 89.7534)), 20.0348),
    "AU12": ((("mouthSmile", 12.3597),), -2.1203),
    "AU15": ((("mouthFrown", 2.7281),), -0.0988),
    "AU20": ((("mouthStretch", 7.5836),), -0.3334),
    "AU25": ((("jawOpen", 7.1428), ("lip_gap", 10.9024)), -1.8392),
}
GATES = {"AU20": "AU12"}  # p(AU20) is multiplied by 1 - p(AU12)


def _value(features, name):
    if name == "log10_cheekSquint":
        return math.log10(_value(features, "cheekSquint") + 1e-9)
    if name in _PAIRED:
        return (features[name + "Left"] + features[name + "Right"]) / 2.0
    return features[name]


def au_probabilities(features):
    """The 8 AU probabilities (``AU_NAMES`` order, float32) of one face's ``Observation.features()``.

    Example:
        >>> from keras_mtanet.teachers.landmarker import BLENDSHAPE_NAMES, GEOMETRY_NAMES
        >>> face = dict.fromkeys(BLENDSHAPE_NAMES + GEOMETRY_NAMES, 0.0)
        >>> p = au_probabilities({**face, "mouthSmileLeft": 0.8, "mouthSmileRight": 0.8})
        >>> bool(p[AU_NAMES.index("AU12")] > 0.5)
        True
    """
    logits = {au: bias + sum(w * _value(features, name) for name, w in terms)
              for au, (terms, bias) in AU_MODELS.items()}
    p = {au: 1.0 / (1.0 + math.exp(-min(max(z, -60.0), 60.0))) for au, z in logits.items()}
    for au, gate in GATES.items():
        p[au] *= 1.0 - p[gate]
    return np.asarray([p[au] for au in AU_NAMES], np.float32)


def mapping_summary():
    """The mapping as plain data (recorded with a label cache: a different mapping is a different cache)."""
    return {au: {"terms": [list(t) for t in terms], "bias": bias, **({"gate": GATES[au]} if au in GATES else {})}
            for au, (terms, bias) in AU_MODELS.items()}
