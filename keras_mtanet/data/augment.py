"""Face-safe augmentation as Keras preprocessing layers: runs on every Keras backend (no TensorFlow needed)."""

import keras


def default_augmentation(seed=None, rand_augment=False, random_erasing=False):
    """Flip, small rotation/zoom/translation and colour jitter on 0-255 RGB batches.

    Horizontal flips keep every label valid: the 8 AUs are bilateral and expressions and VA are unchanged.

    Args:
        seed: seed for every random layer (deterministic augmentation).
        rand_augment: add ``keras.layers.RandAugment`` (2 ops, factor 0.3) at the end.
        random_erasing: add ``keras.layers.RandomErasing`` (half of the images get a patch of 2-20% of their
            area filled with noise), which makes a model use more than one part of the face.
    """
    layers = [
        keras.layers.RandomFlip("horizontal", seed=seed),
        keras.layers.RandomRotation(0.03, fill_mode="reflect", seed=seed),  # +-11 degrees
        keras.layers.RandomZoom(0.1, fill_mode="reflect", seed=seed),
        keras.layers.RandomTranslation(0.05, 0.05, fill_mode="reflect", seed=seed),
        keras.layers.RandomColorJitter(value_range=(0, 255), brightness_factor=0.2, contrast_factor=0.2,
                                       saturation_factor=(0.3, 0.7), hue_factor=0.02, seed=seed),
    ]
    if rand_augment:
        layers.append(keras.layers.RandAugment(value_range=(0, 255), num_ops=2, factor=0.3, seed=seed))
    if random_erasing:
        layers.append(keras.layers.RandomErasing(factor=0.5, scale=(0.02, 0.2), value_range=(0, 255), seed=seed))
    return keras.layers.Pipeline(layers, name="augmentation")
