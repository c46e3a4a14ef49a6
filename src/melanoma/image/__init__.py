"""The image model: backbone registry, tf.data inputs, augmentation, Keras backends and devices, the train stage.

Import submodules directly; this package imports nothing so that `melanoma.runtime.backend` can fix the Keras
backend before Keras loads.
"""
