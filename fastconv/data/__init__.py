"""CIFAR-10 loading (official archive, checked and safely extracted), tensor transforms, synthetic data."""

from .cifar10 import (
    ARCHIVE_NAME, BASE_FOLDER, CIFAR10, CIFAR10_MD5, CIFAR10_URL, CLASSES, ChecksumError, DatasetNotFoundError,
    UnsafeArchiveError, check_archive_members, download_file, load_batch, load_cifar10, load_split, md5sum,
    prepare_cifar10, safe_extract,
)
from .image_folder import ImageFolderError, decode_image_folder, is_image_folder_source, load_image_folder
from .synthetic import make_cifar10_archive, synthetic_images, write_synthetic_cifar10
from .transforms import (
    CIFAR10_MEAN, CIFAR10_STD, IMAGENET_MEAN, IMAGENET_STD, Compose, Normalize, RandomCrop, RandomHorizontalFlip,
    Resize, ToFloat, cifar10_eval_transform, cifar10_train_transform,
)

__all__ = [
    "ARCHIVE_NAME", "BASE_FOLDER", "CIFAR10", "CIFAR10_MD5", "CIFAR10_URL", "CLASSES", "ChecksumError",
    "DatasetNotFoundError", "UnsafeArchiveError", "check_archive_members", "download_file", "load_batch",
    "load_cifar10", "load_split", "md5sum", "prepare_cifar10", "safe_extract", "make_cifar10_archive",
    "synthetic_images", "write_synthetic_cifar10", "CIFAR10_MEAN", "CIFAR10_STD", "IMAGENET_MEAN", "IMAGENET_STD",
    "Compose", "Normalize", "RandomCrop", "RandomHorizontalFlip", "Resize", "ToFloat", "cifar10_eval_transform",
    "cifar10_train_transform", "ImageFolderError", "decode_image_folder", "is_image_folder_source",
    "load_image_folder",
]
