"""A small U-Net in Keras layers only (TensorFlow and JAX backends): 0-255 RGB in, lesion probability out."""

from __future__ import annotations


def _block(x, filters: int, name: str):
    import keras

    for i in (1, 2):
        x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv{i}")(x)
        x = keras.layers.BatchNormalization(name=f"{name}_bn{i}")(x)
        x = keras.layers.Activation("relu", name=f"{name}_relu{i}")(x)
    return x


def build_unet(size: int, width: int = 16, depth: int = 3):
    """Encoder of `depth` poolings (width, 2 x width, ...), a bottleneck, a decoder with skip connections and a
    1x1 sigmoid head (float32, whatever the precision policy). Input scaling is inside the model."""
    import keras

    image = keras.Input((size, size, 3), name="image")
    x = keras.layers.Rescaling(1 / 255.0, name="scale")(image)
    skips = []
    for level in range(depth):
        x = _block(x, width * 2 ** level, f"down{level}")
        skips.append(x)
        x = keras.layers.MaxPooling2D(2, name=f"pool{level}")(x)
    x = _block(x, width * 2 ** depth, "bottom")
    for level in reversed(range(depth)):
        x = keras.layers.Conv2DTranspose(width * 2 ** level, 2, strides=2, padding="same", name=f"up{level}")(x)
        x = keras.layers.Concatenate(name=f"skip{level}")([x, skips[level]])
        x = _block(x, width * 2 ** level, f"dec{level}")
    out = keras.layers.Conv2D(1, 1, activation="sigmoid", dtype="float32", name="mask")(x)
    return keras.Model(image, out, name="unet")
