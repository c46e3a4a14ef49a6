"""Lesion segmentation: a small U-Net (`melanoma segment train`), a classical fallback, and the lesion step
(mask or crop) that prepare, predict and serve apply before the resize (`melanoma.data.images.stored_jpeg`)."""
