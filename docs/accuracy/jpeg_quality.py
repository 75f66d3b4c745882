#!/usr/bin/env python
"""How much JPEG compression costs the fast recipe: train it on an image-folder copy of CIFAR-10 re-encoded at a
lower JPEG quality (train and test images alike, Pillow, 4:2:0 chroma) and print the test accuracy.

    python docs/accuracy/jpeg_quality.py --data-dir ../shared/data/cifar10-jpg.tar.gz --quality 50 --seed 1
    python docs/accuracy/jpeg_quality.py --data-dir ../shared/data/cifar10-jpg.tar.gz --quality 0 --seed 1   # as is

Each image is decoded from the copy, encoded again at --quality and decoded back, so the result has both the
copy's losses (about quality 75) and the new ones. The recipe is fastconv.train.fast_cifar's airbench94 one
(optimizer="sgd", the default when the logged runs were made: float32, every conv and max-pool on fastconv, 9.9
epochs); the accuracy is the final one with test-time augmentation.
"""

from __future__ import annotations

import argparse
import io
import time

import numpy as np
import torch
from PIL import Image

from fastconv.data.image_folder import load_image_folder
from fastconv.train import fast_cifar
from fastconv.train.memory import keep_freed_memory


def reencode(images: torch.Tensor, quality: int) -> torch.Tensor:
    """uint8 (N, 3, H, W) through a JPEG encode / decode at `quality`."""
    out = np.empty_like(images.numpy())
    for i, image in enumerate(images.numpy()):
        buf = io.BytesIO()
        Image.fromarray(image.transpose(1, 2, 0)).save(buf, format="JPEG", quality=quality)
        buf.seek(0)
        out[i] = np.asarray(Image.open(buf).convert("RGB")).transpose(2, 0, 1)
    return torch.from_numpy(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", required=True, help="an image folder / .tar.gz with train/ and test/")
    ap.add_argument("--quality", type=int, required=True, help="JPEG quality 1-95 to re-encode at; 0: as it is")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if not 0 <= args.quality <= 95:
        ap.error(f"--quality must be 0 (no re-encoding) or 1..95, got {args.quality}")
    keep_freed_memory()
    if args.threads:
        torch.set_num_threads(args.threads)
    data = load_image_folder(args.data_dir, progress=False)
    train, test = data["train_images"], data["test_images"]
    if args.quality:
        t0 = time.perf_counter()
        train, test = reencode(train, args.quality), reencode(test, args.quality)
        change = (train.float() - data["train_images"].float()).abs().mean().item()
        print(f"re-encoded at quality {args.quality} in {time.perf_counter() - t0:.0f} s; "
              f"mean |change| {change:.2f} of 255", flush=True)
    recipe = fast_cifar.FastCifarRecipe(seed=args.seed, optimizer="sgd")  # the recipe of the logged runs
    _, _, result = fast_cifar.train(recipe, train, data["train_labels"], test, data["test_labels"], progress=False,
                                    eval_every_epoch=False)
    print(f"quality {args.quality or 'as is'} seed {args.seed}: test accuracy {result['test']['accuracy']:.4f} "
          f"(TTA level {recipe.tta_level}), training {result['train_seconds']:.0f} s", flush=True)


if __name__ == "__main__":
    main()
