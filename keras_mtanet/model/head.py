"""The MTANet head: two pooled branches over the backbone features, then the three task layers."""

from keras import layers

from keras_mtanet.labels import AU_NAMES, EXPR_NAMES, VA_NAMES
from keras_mtanet.model import fused


def pooled_features(x, filters=512, dropout=0.5, negative_slope=0.3, name="head"):
    """Dropout -> 1x1 conv -> LeakyReLU in two branches, one average- and one max-pooled, concatenated.

    The result has ``2 * filters`` features (1024 in the paper).
    """
    pooled = []
    for branch, pool in (("gap", layers.GlobalAveragePooling2D), ("gmp", layers.GlobalMaxPooling2D)):
        y = layers.Dropout(dropout, name=f"{name}_{branch}_dropout")(x)
        y = layers.Conv2D(filters, 1, name=f"{name}_{branch}_conv")(y)
        y = fused.LeakyReLU(negative_slope=negative_slope, name=f"{name}_{branch}_lrelu")(y)
        pooled.append(pool(name=f"{name}_{branch}_pool")(y))
    return layers.Concatenate(name=f"{name}_concat")(pooled)


def task_outputs(features, num_aus=len(AU_NAMES), num_expressions=len(EXPR_NAMES)):
    """``{"va": tanh (N, 2), "au": sigmoid (N, num_aus), "expr": softmax (N, num_expressions)}``.

    The output layers compute in float32 so that mixed-precision models still emit float32 probabilities.
    """
    return {
        "va": layers.Dense(len(VA_NAMES), activation="tanh", dtype="float32", name="va")(features),
        "au": layers.Dense(num_aus, activation="sigmoid", dtype="float32", name="au")(features),
        "expr": layers.Dense(num_expressions, activation="softmax", dtype="float32", name="expr")(features),
    }
