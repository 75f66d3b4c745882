"""Small generated CIFAR-10 image folders (root/train/<class>/*.png and root/test/...)."""
from pathlib import Path

import numpy as np
from PIL import Image

from fastconv.data.image_folder import CLASSES


def write_folder(root, per_class=(3, 2), suffix=".png", classes=CLASSES, seed=0):
    """root/train/<class>/NNNN<suffix> and root/test/...: per_class images per class and split; returns the
    images by (split, class) in file order (PNG is lossless, so they must come back exactly)."""
    rng = np.random.default_rng(seed)
    written = {}
    for split, count in zip(("train", "test"), per_class):
        for name in classes:
            folder = Path(root) / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                array = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
                Image.fromarray(array).save(folder / f"{i:04d}{suffix}")
                written.setdefault((split, name), []).append(array)
    return written
