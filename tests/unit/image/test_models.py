"""Every registered model builds with weights none and predicts (batch, 1) probabilities."""


import keras
import numpy as np
import pytest

from melanoma.errors import ConfigError
from melanoma.image.models import MODELS, ImagenetPreprocess, build_model, get_spec, prediction_model

REQUIRED = [f"efficientnet_b{i}" for i in range(8)] + [f"efficientnet_v2_{s}" for s in
                                                        ("b0", "b1", "b2", "b3", "s", "m", "l")] + [
    "inception_resnet_v2", "vgg16", "densenet121", "resnet101v2", "small_cnn_32", "small_cnn_64"]


def test_registry_covers_the_required_names():
    assert set(REQUIRED) <= set(MODELS)


# The small members of each family build in the fast suite; every registered model builds in `make test-all`.
FAST = {"efficientnet_b0", "efficientnet_v2_b0", "vgg16", "small_cnn_32", "small_cnn_64", "simple_cnn"}


@pytest.mark.parametrize("name", [n if n in FAST else pytest.param(n, marks=pytest.mark.slow) for n in sorted(MODELS)])
def test_model_builds_and_predicts_probabilities(name):
    size = max(32, get_spec(name).min_size)
    model = build_model(name, size, weights="none")
    x = np.random.default_rng(0).uniform(0, 255, (2, size, size, 3)).astype("float32")
    y = np.asarray(model(x, training=False))  # eager call: no tf.function tracing, much faster to test
    assert y.shape == (2, 1) and np.isfinite(y).all() and (0 <= y).all() and (y <= 1).all()
    keras.backend.clear_session()


def test_input_scaling_is_a_layer_of_the_model():
    # InceptionResNetV2 and ResNet101V2 want [-1, 1]: a Rescaling made from the registry's scale and offset.
    spec = get_spec("inception_resnet_v2")
    out = keras.layers.Rescaling(spec.scale, spec.offset)(np.array([[0.0, 127.5, 255.0]], dtype="float32"))
    np.testing.assert_allclose(np.asarray(out), [[-1.0, 0.0, 1.0]], atol=1e-6)
    # build_model puts that layer first in the model (a small network here; the large ones in make test-all)
    scale = build_model("small_cnn_32", 32, "none").get_layer("scale")
    np.testing.assert_allclose(np.asarray(scale(np.array([[0.0, 255.0]], dtype="float32"))), [[0.0, 1.0]], atol=1e-6)
    # EfficientNets rescale 0-255 internally (keras.applications), so no extra layer is added.
    assert "scale" not in [l.name for l in build_model("efficientnet_b0", 32, "none").layers]


@pytest.mark.slow  # builds InceptionResNetV2: ~8 s of CPU; the fast test above checks the same layer
def test_input_scaling_is_inside_the_model():
    # InceptionResNetV2 wants [-1, 1]: the model rescales the 0-255 input itself.
    model = build_model("inception_resnet_v2", 75, "none")
    scale = model.get_layer("scale")
    out = scale(np.array([[0.0, 127.5, 255.0]], dtype="float32"))
    np.testing.assert_allclose(np.asarray(out), [[-1.0, 0.0, 1.0]], atol=1e-6)
    # EfficientNets rescale 0-255 internally (keras.applications), so no extra layer is added.
    assert "scale" not in [l.name for l in build_model("efficientnet_b0", 32, "none").layers]


def test_seed_backbone_scalings_match_keras_applications_preprocess_input():
    # The three scalings, each against keras.applications' own preprocess_input; VGG16's built into its model.
    x = np.random.default_rng(3).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    apps = keras.applications
    caffe = build_model("vgg16", 32, "none").get_layer("vgg16_caffe").get_layer("imagenet_preprocess")
    np.testing.assert_allclose(np.asarray(caffe(x)), apps.vgg16.preprocess_input(x.copy()), atol=1e-5)
    np.testing.assert_allclose(np.asarray(ImagenetPreprocess("torch")(x)), apps.densenet.preprocess_input(x.copy()),
                               atol=1e-5)
    spec = get_spec("resnet101v2")
    np.testing.assert_allclose(np.asarray(keras.layers.Rescaling(spec.scale, spec.offset)(x)),
                               apps.resnet_v2.preprocess_input(x.copy()), atol=1e-5)
    keras.backend.clear_session()


@pytest.mark.slow  # builds DenseNet121 and ResNet101V2: ~8 s of CPU; the fast test above checks each scaling
def test_seed_backbones_scale_their_input_as_keras_applications_preprocess_input():
    # Each backbone was trained on its own input scaling: the model must apply it to the 0-255 input itself.
    x = np.random.default_rng(3).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    apps = keras.applications
    for name, layer, reference in (("vgg16", "imagenet_preprocess", apps.vgg16.preprocess_input),
                                   ("densenet121", "imagenet_preprocess", apps.densenet.preprocess_input),
                                   ("resnet101v2", "scale", apps.resnet_v2.preprocess_input)):
        model = build_model(name, 32, "none")
        if layer == "scale":
            first = model.get_layer("scale")
        else:  # inside the backbone wrapper, right after its input
            first = model.get_layer(f"{name}_{'caffe' if name == 'vgg16' else 'torch'}").get_layer(layer)
        np.testing.assert_allclose(np.asarray(first(x)), reference(x.copy()), atol=1e-5, err_msg=name)
        keras.backend.clear_session()


@pytest.mark.slow  # builds and saves several backbones: ~17 s
def test_weights_from_a_path_round_trip(tmp_path):
    a = build_model("efficientnet_b0", 32, "none")
    x = np.random.default_rng(1).uniform(0, 255, (3, 32, 32, 3)).astype("float32")
    # Move the head away from its initial values so a load is observable.
    a.get_layer("pred").set_weights([w + 0.3 for w in a.get_layer("pred").get_weights()])
    path = tmp_path / "model.weights.h5"
    a.save_weights(path)
    b = build_model("efficientnet_b0", 32, str(path))
    np.testing.assert_allclose(np.asarray(a(x)), np.asarray(b(x)), atol=1e-6)
    with pytest.raises(ConfigError, match="not found"):
        build_model("efficientnet_b0", 32, str(tmp_path / "missing.h5"))
    with pytest.raises(ConfigError, match="does not fit a efficientnet_b1 model"):
        build_model("efficientnet_b1", 32, str(path))
    # Backbone-only weights (as Kaggle datasets of keras.applications 'notop' files ship them) load too.
    backbone = a.get_layer("efficientnetb0")
    backbone.save_weights(tmp_path / "notop.weights.h5")
    c = build_model("efficientnet_b0", 32, str(tmp_path / "notop.weights.h5"))
    for w_a, w_c in zip(backbone.get_weights(), c.get_layer("efficientnetb0").get_weights()):
        np.testing.assert_array_equal(w_a, w_c)
    with pytest.raises(ConfigError, match="does not fit the efficientnet_b1 backbone"):
        build_model("efficientnet_b1", 32, str(tmp_path / "notop.weights.h5"))
    (tmp_path / "junk.h5").write_bytes(b"not hdf5")
    with pytest.raises(ConfigError, match="not an HDF5 weights file"):
        build_model("efficientnet_b0", 32, str(tmp_path / "junk.h5"))


def test_unknown_model_and_too_small_input():
    with pytest.raises(ConfigError, match="unknown model"):
        build_model("resnet9000", 32, "none")
    with pytest.raises(ConfigError, match="at least 75px"):
        build_model("inception_resnet_v2", 64, "none")


def test_prediction_model_passes_ids_through():
    model = build_model("small_cnn_32", 32, "none")  # the wrapper does not depend on the backbone
    pm = prediction_model(model)
    x = np.random.default_rng(2).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    out = pm.predict({"image": x, "idx": np.array([7, 3, 9, 1], dtype="int32")}, verbose=0)
    assert out["idx"].tolist() == [7, 3, 9, 1]
    np.testing.assert_allclose(out["pred"], model.predict(x, verbose=0), atol=1e-6)
