"""Data: the competition CSV schema, image decoding, TFRecords, duplicates, folds, the prepare and check stages.

Nothing here imports TensorFlow or Keras at import time (the CLI picks the backend first).
"""
