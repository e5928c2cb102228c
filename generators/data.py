"""Image data sets from local files in their standard formats, checked against known checksums.

Files are looked for in ``--data-dir``, then ``$SYMZOO_DATA``, then ``~/.cache/symzoo/data``, each
either directly or in a sub-folder named after the data set (``mnist/``, ``fashion_mnist/``,
``cifar-10-batches-py/``). scikit-learn's bundled ``digits`` needs no files. Nothing is downloaded.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from zoo.errors import SpecError, SymzooError

__all__ = ["ImageData", "DATASETS", "DATASET_SHAPES", "load_images", "data_roots", "DataError"]


class DataError(SymzooError):
    """A data file is missing or damaged."""


@dataclass(frozen=True)
class _Files:
    folder: str  # sub-folder name conventionally used for the data set
    md5: dict[str, str]  # file name -> md5 of the file as distributed
    hint: str


_MNIST = _Files("mnist", {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}, "the four MNIST IDX .gz files")
_FASHION = _Files("fashion_mnist", {
    "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
}, "the four Fashion-MNIST IDX .gz files")
_CIFAR10 = _Files("cifar-10-batches-py", {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
}, "the CIFAR-10 python batches (the extracted cifar-10-batches-py folder)")

DATASETS = ("digits", "mnist", "fashion_mnist", "cifar10")
# One example's shape (C, H, W) and the number of classes of each data set, known without reading
# a file, so that a zoo spec whose network does not fit its data is refused before anything is made.
DATASET_SHAPES: dict[str, tuple[tuple[int, int, int], int]] = {
    "digits": ((1, 8, 8), 10), "mnist": ((1, 28, 28), 10), "fashion_mnist": ((1, 28, 28), 10),
    "cifar10": ((3, 32, 32), 10),
}


@dataclass(frozen=True)
class ImageData:
    """A classification data set as tensors: images ``(N, C, H, W)`` float32, normalised with the
    training set's per-channel mean and std; labels int64."""

    name: str
    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    num_classes: int

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    def to(self, device: torch.device | str) -> "ImageData":
        return ImageData(self.name, self.x_train.to(device), self.y_train.to(device), self.x_test.to(device),
                         self.y_test.to(device), self.num_classes)

    def subset(self, train: int | None = None, test: int | None = None) -> "ImageData":
        """The first ``train`` training and ``test`` test images (None: all of them); asking for
        more than there are gives all of them (a caller that must refuse that checks first).

        The parts cut are copies, not views: a view would keep, and pickle to a worker process or
        a Ray task, the whole set.
        """
        for part, n in (("training", train), ("test", test)):
            if n is not None and n < 1:
                raise SpecError(f"{self.name}: cannot take the first {n} {part} images; expected 1 or more")

        def first(x: Tensor, n: int | None) -> Tensor:
            return x if n is None or n >= len(x) else x[:n].clone()

        return dataclasses.replace(self, x_train=first(self.x_train, train), y_train=first(self.y_train, train),
                                   x_test=first(self.x_test, test), y_test=first(self.y_test, test))


DATA_DIR_HELP = ("folder with the data set files; looked for in this folder, then $SYMZOO_DATA, then "
                 "~/.cache/symzoo/data (scikit-learn's digits need none)")


def data_roots(data_dir: str | Path | None = None) -> list[Path]:
    """Where data files are looked for, in order."""
    roots = [Path(data_dir)] if data_dir else []
    if os.environ.get("SYMZOO_DATA"):
        roots.append(Path(os.environ["SYMZOO_DATA"]))
    roots.append(Path.home() / ".cache" / "symzoo" / "data")
    return roots


def load_images(name: str, data_dir: str | Path | None = None) -> ImageData:
    """Load a data set by name (see :data:`DATASETS`)."""
    if name == "digits":
        return _digits()
    if name in ("mnist", "fashion_mnist"):
        return _idx(name, _MNIST if name == "mnist" else _FASHION, data_dir)
    if name == "cifar10":
        return _cifar10(data_dir)
    raise DataError(f"unknown data set '{name}'; expected one of {', '.join(DATASETS)}")


def _find(files: _Files, filename: str, data_dir: str | Path | None, dataset: str) -> Path:
    return _read_verified(files, filename, data_dir, dataset)[0]


def _read_verified(files: _Files, filename: str, data_dir: str | Path | None, dataset: str) -> tuple[Path, bytes]:
    """The file's path and bytes, once those bytes match the published md5 (the bytes are returned
    so that a caller parses exactly what was checked, not a file swapped in after the check)."""
    roots = data_roots(data_dir)
    candidates = [p for root in roots for p in (root / filename, root / files.folder / filename)]
    for path in candidates:
        if path.is_file():
            raw = path.read_bytes()
            digest = hashlib.md5(raw).hexdigest()
            if digest != files.md5[filename]:
                raise DataError(f"{path}: md5 {digest} does not match the published {dataset} checksum "
                                f"{files.md5[filename]}; the file is damaged or not {dataset}: replace it")
            return path, raw
    looked = ", ".join(str(r) for r in roots)
    raise DataError(f"{dataset} file {filename} not found in {looked} (or their '{files.folder}/' sub-folders); "
                    f"put {files.hint} there, or pass --data-dir / set SYMZOO_DATA")


def _read_idx(path: Path, expected_magic: int) -> np.ndarray:
    with gzip.open(path, "rb") as handle:
        raw = handle.read()
    magic = int.from_bytes(raw[:4], "big")
    if magic != expected_magic:
        raise DataError(f"{path}: IDX magic number {magic:#010x}, expected {expected_magic:#010x}")
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _idx(name: str, files: _Files, data_dir: str | Path | None) -> ImageData:
    def part(prefix: str) -> tuple[np.ndarray, np.ndarray]:
        images = _read_idx(_find(files, f"{prefix}-images-idx3-ubyte.gz", data_dir, name), 0x803)
        labels = _read_idx(_find(files, f"{prefix}-labels-idx1-ubyte.gz", data_dir, name), 0x801)
        return images[:, None], labels

    (x_train, y_train), (x_test, y_test) = part("train"), part("t10k")
    return _normalised(name, x_train, y_train, x_test, y_test, 10)


def _cifar10(data_dir: str | Path | None) -> ImageData:
    def batch(filename: str) -> tuple[np.ndarray, np.ndarray]:
        # The one place symzoo unpickles a file (unpickling can run code): CIFAR-10's python batches
        # exist only as pickles. It is safe only because these exact bytes were first checked
        # against the published md5 of each batch, so nothing but the genuine files is unpickled.
        _, raw = _read_verified(_CIFAR10, filename, data_dir, "CIFAR-10")
        data = pickle.loads(raw, encoding="latin1")
        return np.asarray(data["data"], dtype=np.uint8).reshape(-1, 3, 32, 32), np.asarray(data["labels"])

    train = [batch(f"data_batch_{i}") for i in range(1, 6)]
    x_test, y_test = batch("test_batch")
    return _normalised("cifar10", np.concatenate([x for x, _ in train]), np.concatenate([y for _, y in train]),
                       x_test, y_test, 10)


def _digits() -> ImageData:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.25, random_state=0, stratify=y)
    shape = (-1, 1, 8, 8)
    return _normalised("digits", x_train.reshape(shape), y_train, x_test.reshape(shape), y_test, 10)


def _normalised(name: str, x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray,
                num_classes: int) -> ImageData:
    train = torch.as_tensor(np.asarray(x_train, dtype=np.float32))
    test = torch.as_tensor(np.asarray(x_test, dtype=np.float32))
    mean = train.mean(dim=(0, 2, 3), keepdim=True)
    std = train.std(dim=(0, 2, 3), keepdim=True)
    return ImageData(name, (train - mean) / std, torch.as_tensor(np.asarray(y_train, dtype=np.int64)),
                     (test - mean) / std, torch.as_tensor(np.asarray(y_test, dtype=np.int64)), num_classes)
