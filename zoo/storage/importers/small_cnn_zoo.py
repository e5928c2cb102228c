"""Import the Small CNN Zoo (Unterthiner et al. 2020, "Predicting Neural Network Accuracy from Weights").

Source format (README and ``train_network.py`` of google-research/google-research
``dnn_predict_accuracy``, and public loaders of the released files): one folder per data set with

- ``weights.npy``: rows × parameters float32, one row per checkpoint: the Keras variables
  flattened in TensorFlow order (conv kernels HWIO, dense kernels (in, out));
- ``layout.csv``: one line per variable with ``varname`` (``sequential/conv2d/kernel:0``,
  ``sequential/conv2d_1/bias:0``, ``sequential/dense/kernel:0``, ...), ``start_idx`` and
  ``end_idx`` (its columns in a row), optionally ``size``, and ``shape`` (``(3, 3, 1, 16)``);
- ``metrics.csv.gz`` (or ``metrics.csv``): one line per row of ``weights.npy`` with
  ``test_accuracy``, ``train_accuracy`` (fractions), ``test_loss``, ``train_loss``, ``config.*``
  hyperparameters (numbers and strings) and bookkeeping (``step``, ``modeldir``); an unnamed
  leading index column is ignored.

Mapping and assumptions:

- Architecture: a ``CNNSpec`` with one conv per ``conv2d*`` kernel/bias pair (in the order of
  Keras' name suffix) and one ``dense`` head; channels and kernel size from the kernel shapes,
  in_channels from the first kernel, num_classes from the dense kernel, stride 2 (the zoo's
  ``cnn_stride``; strides are not in the files). Image size 28 for MNIST/Fashion-MNIST and 32
  for CIFAR-10/SVHN (``config.dataset``), else 28 for one input channel and 32 otherwise.
- Padding: Keras' default ``valid`` (the spec's ``padding="valid"``), so a rebuilt network
  computes the original's function for rows trained with the zoo's activation.
- Activation: models differ in ``config.activation``; the spec takes the most common one symzoo
  knows (Keras ``linear`` = ``identity``), else ``relu``.
- Rows: every row of ``weights.npy`` is one zoo row (index = seed = row number), intermediate
  checkpoints included; ``step`` (kept as a hyperparameter) says which, so filter on it for
  final models. Rows with non-finite weights are ``diverged``.
- Hyperparameters: numeric ``config.*`` columns and ``step``, as floats, named without the
  ``config.`` prefix; the other columns (strings, bookkeeping) are dropped and listed in the
  zoo's description.
- Kernels are transposed to PyTorch order: conv HWIO → OIHW, dense (in, out) → (out, in).
"""

from __future__ import annotations

import csv
import gzip
import math
import re
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from zoo.layout import ParamLayout
from zoo.nets import CNNSpec
from zoo.nn import ACTIVATIONS
from zoo.storage.format import METRICS
from zoo.storage.importers.common import require_dir, status_of, write_models
from zoo.storage.writer import ZooWriter
from zoo.storage.manifest import ZooFormatError, ZooMetadata, ZooSchema
from zoo.storage.writer import ModelRecord

__all__ = ["import_small_cnn_zoo"]

_WEIGHTS, _LAYOUT, _METRIC_FILES = "weights.npy", "layout.csv", ("metrics.csv.gz", "metrics.csv")
_LAYOUT_COLUMNS = ("varname", "start_idx", "end_idx", "shape")
_VARNAME = re.compile(r"^(?:.*/)?(conv2d|dense)(?:_(\d+))?/(kernel|bias):0$")
_METRIC_COLUMNS = {"test_accuracy": "test_acc", "train_accuracy": "train_acc", "test_loss": "test_loss",
                   "train_loss": "train_loss"}
_IMAGE_SIZE = {"mnist": 28, "fashion_mnist": 28, "cifar10": 32, "svhn_cropped": 32}
_KERAS_ACTIVATIONS = {"linear": "identity"}
_RESERVED = {"model_id", "index", "seed", "status", "weights", *METRICS}
_HWIO_TO_OIHW, _IN_OUT_TO_OUT_IN = (3, 2, 0, 1), (1, 0)

Table = dict[str, list[str]]  # CSV columns by name


@dataclass(frozen=True)
class _Variable:
    """One Keras variable: its columns in a row and its TensorFlow shape."""

    name: str
    start: int
    end: int
    shape: tuple[int, ...]


@dataclass(frozen=True)
class _Layer:
    kind: str  # "conv2d" or "dense"
    kernel: _Variable
    bias: _Variable


# A symzoo tensor's source: the variable and the axis order that turns it into PyTorch's.
_Piece = tuple[_Variable, tuple[int, ...] | None]


def import_small_cnn_zoo(src: str | Path, out: str | Path) -> Path:
    """Import one data set's folder of the Small CNN Zoo into the symzoo zoo ``out``."""
    folder = require_dir(src, "a Small CNN Zoo folder (weights.npy, layout.csv, metrics.csv.gz)")
    weights = _open_weights(folder / _WEIGHTS)
    layers = _read_layout(folder / _LAYOUT, folder / _WEIGHTS, weights.shape[1])
    metrics_path, table = _read_metrics(folder, weights.shape[0])
    dataset = _most_common(table.get("config.dataset", []))
    spec = _spec_of(layers, folder / _LAYOUT, dataset, table)
    pieces = _pieces(layers, ParamLayout.from_module(spec.build()))
    hyper, dropped = _hyperparameters(table)
    metrics = {ours: _metric(table, theirs, metrics_path)
               for theirs, ours in _METRIC_COLUMNS.items() if theirs in table}
    writer = ZooWriter(out, spec, ZooSchema({name: "float" for name in hyper}),
                       _metadata(folder, weights.shape[0], spec, dataset, hyper, dropped))

    def records(chunk: Sequence[int]) -> Iterator[ModelRecord]:
        flat = _to_symzoo(np.asarray(weights[np.asarray(chunk)], dtype=np.float32), pieces)
        for index, vector in zip(chunk, flat):
            yield ModelRecord(index=index, seed=index, weights=vector, status=status_of(vector),
                              metrics={k: float(v[index]) for k, v in metrics.items()},
                              hyperparameters={k: float(v[index]) for k, v in hyper.items()})

    with writer:
        write_models(writer, range(weights.shape[0]), records, desc="import small-cnn-zoo")
    return Path(out)


# -- files ----------------------------------------------------------------------------------------
def _open_weights(path: Path) -> np.ndarray:
    """The weights matrix, memory-mapped (the released ones are gigabytes)."""
    if not path.is_file():
        raise ZooFormatError(f"{path}: missing; expected the zoo's weights as a (rows, parameters) float32 .npy file")
    try:
        array = np.load(path, mmap_mode="r")
    except (OSError, ValueError) as err:
        raise ZooFormatError(f"{path}: not a readable .npy file ({err})") from None
    if array.ndim != 2 or not np.issubdtype(array.dtype, np.floating):
        raise ZooFormatError(f"{path}: holds a {array.dtype} array of shape {array.shape}; "
                             "expected (rows, parameters) floats")
    return array


def _read_table(path: Path) -> Table:
    """A CSV file (gzip-compressed if ``.gz``) as columns of strings; unnamed columns dropped."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", newline="") as handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            if not header:
                raise ZooFormatError(f"{path}: empty; expected a CSV file with a header line")
            columns: list[list[str]] = [[] for _ in header]
            for line, row in enumerate(reader, start=2):
                if len(row) != len(header):
                    raise ZooFormatError(f"{path}: line {line} has {len(row)} fields; the header has {len(header)}")
                for column, value in zip(columns, row):
                    column.append(value)
    except (OSError, EOFError, csv.Error, UnicodeDecodeError) as err:
        raise ZooFormatError(f"{path}: not a readable CSV file ({err})") from None
    return {name: column for name, column in zip(header, columns) if name}


def _read_metrics(folder: Path, rows: int) -> tuple[Path, Table]:
    path = next((folder / name for name in _METRIC_FILES if (folder / name).is_file()), None)
    if path is None:
        raise ZooFormatError(f"{folder}: no metrics.csv.gz or metrics.csv; expected one line of metrics "
                             f"per row of {_WEIGHTS}")
    table = _read_table(path)
    count = len(next(iter(table.values()), []))
    if count != rows:
        raise ZooFormatError(f"{path}: has {count} rows; {folder / _WEIGHTS} has {rows}, one per model")
    return path, table


def _as_floats(values: Sequence[str]) -> np.ndarray | None:
    """The column as float64 (empty = NaN), or None if any value is not a number."""
    try:
        return np.array([float(v) if v.strip() else math.nan for v in values], dtype=np.float64)
    except ValueError:
        return None


def _metric(table: Table, column: str, path: Path) -> np.ndarray:
    values = _as_floats(table[column])
    if values is None:
        raise ZooFormatError(f"{path}: column {column} holds values that are not numbers")
    return values


def _most_common(values: Sequence[str]) -> str | None:
    counts = Counter(v for v in values if v)
    return counts.most_common(1)[0][0] if counts else None


# -- layout ---------------------------------------------------------------------------------------
def _read_layout(path: Path, weights_path: Path, columns: int) -> list[_Layer]:
    """The conv layers in order, then the dense layer, checked to tile a row of ``weights.npy``."""
    if not path.is_file():
        raise ZooFormatError(f"{path}: missing; expected a layout.csv with columns {','.join(_LAYOUT_COLUMNS)}")
    table = _read_table(path)
    missing = [c for c in _LAYOUT_COLUMNS if c not in table]
    if missing:
        raise ZooFormatError(f"{path}: lacks column(s) {', '.join(missing)}; expected {','.join(_LAYOUT_COLUMNS)}")
    variables = [_variable(path, line, *fields)
                 for line, fields in enumerate(zip(*(table[c] for c in _LAYOUT_COLUMNS)), start=2)]
    total = _check_tiling(path, variables)
    if total != columns:
        raise ZooFormatError(f"{weights_path}: has {columns} columns per row; {path.name} describes {total} "
                             f"(expected a (rows, {total}) array)")
    return _layers(path, variables)


def _variable(path: Path, line: int, name: str, start: str, end: str, shape: str) -> _Variable:
    try:
        variable = _Variable(name, int(start), int(end), tuple(int(d) for d in re.findall(r"\d+", shape)))
    except ValueError:
        raise ZooFormatError(f"{path}: line {line}: start_idx '{start}' and end_idx '{end}' must be integers") from None
    if variable.end - variable.start != math.prod(variable.shape):
        raise ZooFormatError(f"{path}: line {line}: {name} spans {variable.end - variable.start} columns "
                             f"but has shape {variable.shape}")
    return variable


def _check_tiling(path: Path, variables: list[_Variable]) -> int:
    """Variables must cover the columns 0..total without gaps or overlaps; returns total."""
    position = 0
    for variable in sorted(variables, key=lambda v: v.start):
        if variable.start != position:
            raise ZooFormatError(f"{path}: {variable.name} starts at column {variable.start}; expected {position} "
                                 "(variables must tile a row without gaps or overlaps)")
        position = variable.end
    return position


def _layers(path: Path, variables: list[_Variable]) -> list[_Layer]:
    parts: dict[tuple[str, int], dict[str, _Variable]] = {}
    for variable in variables:
        match = _VARNAME.match(variable.name)
        if not match:
            raise ZooFormatError(f"{path}: unexpected variable '{variable.name}'; expected Keras "
                                 "conv2d*/kernel:0, conv2d*/bias:0, dense/kernel:0 and dense/bias:0")
        parts.setdefault((match[1], int(match[2] or 0)), {})[match[3]] = variable
    layers = []
    for (kind, order), pair in sorted(parts.items(), key=lambda item: (item[0][0] == "dense", item[0][1])):
        if set(pair) != {"kernel", "bias"}:
            raise ZooFormatError(f"{path}: {kind}{f'_{order}' if order else ''} has only a {''.join(pair)}; "
                                 "expected a kernel and a bias")
        layers.append(_Layer(kind, pair["kernel"], pair["bias"]))
    convs = sum(layer.kind == "conv2d" for layer in layers)
    if convs == 0 or len(layers) - convs != 1:
        raise ZooFormatError(f"{path}: describes {convs} conv and {len(layers) - convs} dense layers; "
                             "expected conv layers and one dense layer")
    return layers


# -- architecture and conversion ------------------------------------------------------------------
def _spec_of(layers: list[_Layer], path: Path, dataset: str | None, table: Table) -> CNNSpec:
    *convs, dense = layers
    kernel = convs[0].kernel.shape
    if len(kernel) != 4 or kernel[0] != kernel[1]:
        raise ZooFormatError(f"{path}: {convs[0].kernel.name} has shape {kernel}; expected a square HWIO kernel")
    size, channels = kernel[0], [kernel[2]]
    for layer in convs:
        _check_layer(path, layer, (size, size, channels[-1]))
        channels.append(layer.kernel.shape[-1])
    _check_layer(path, dense, (channels[-1],))
    return CNNSpec(
        in_channels=channels[0], image_size=_IMAGE_SIZE.get(dataset or "", 28 if channels[0] == 1 else 32),
        channels=tuple(channels[1:]), num_classes=dense.kernel.shape[-1], strides=(2,) * len(convs),
        kernel_size=size, padding="valid", activation=_activation(table),
    )


def _check_layer(path: Path, layer: _Layer, leading: tuple[int, ...]) -> None:
    """Kernel ``(*leading, out)`` and bias ``(out,)``: the layer fits the previous one."""
    shape, bias = layer.kernel.shape, layer.bias.shape
    if len(shape) != len(leading) + 1 or shape[:-1] != leading or bias != shape[-1:]:
        raise ZooFormatError(f"{path}: {layer.kernel.name} has shape {shape} and its bias {bias}; "
                             f"expected ({', '.join(map(str, leading))}, C) and (C,)")


def _activation(table: Table) -> str:
    names = [_KERAS_ACTIVATIONS.get(v, v) for v in table.get("config.activation", [])]
    return _most_common([n for n in names if n in ACTIVATIONS]) or "relu"


def _pieces(layers: list[_Layer], layout: ParamLayout) -> list[_Piece]:
    """The source of every tensor of the symzoo CNN, in its layout order."""
    *convs, dense = layers
    sources: dict[str, _Piece] = {"head.weight": (dense.kernel, _IN_OUT_TO_OUT_IN), "head.bias": (dense.bias, None)}
    for i, layer in enumerate(convs):
        sources[f"blocks.{i}.layer.weight"] = (layer.kernel, _HWIO_TO_OIHW)
        sources[f"blocks.{i}.layer.bias"] = (layer.bias, None)
    return [sources[slot.name] for slot in layout.slots]


def _to_symzoo(rows: np.ndarray, pieces: list[_Piece]) -> np.ndarray:
    """Rows in TensorFlow layout -> rows in symzoo's (PyTorch order, state_dict order)."""
    parts = []
    for variable, axes in pieces:
        block = rows[:, variable.start : variable.end].reshape(len(rows), *variable.shape)
        if axes is not None:
            block = block.transpose(0, *(a + 1 for a in axes))
        parts.append(block.reshape(len(rows), -1))
    return np.concatenate(parts, axis=1)


def _hyperparameters(table: Table) -> tuple[dict[str, np.ndarray], list[str]]:
    """Numeric ``config.*`` columns and ``step`` by name; the names of the columns not kept."""
    hyper: dict[str, np.ndarray] = {}
    dropped = []
    for column, values in table.items():
        numbers = _as_floats(values) if column.startswith("config.") or column == "step" else None
        if numbers is None:
            if column not in _METRIC_COLUMNS:
                dropped.append(column)
            continue
        name = column.removeprefix("config.")
        hyper[column if name in _RESERVED or name in hyper else name] = numbers
    return hyper, dropped


def _metadata(folder: Path, rows: int, spec: CNNSpec, dataset: str | None, hyper: dict[str, np.ndarray],
              dropped: list[str]) -> ZooMetadata:
    return ZooMetadata(
        name=f"small-cnn-zoo-{folder.name}",
        description=(
            f"Imported from {folder.name}/ of the Small CNN Zoo (Unterthiner et al. 2020): {rows} rows of "
            f"{_WEIGHTS}, one checkpoint each ('step' gives its epoch where recorded). Weights are exact, "
            "kernels transposed to PyTorch order; the originals pad 'valid' and symzoo's CNN pads 'same', and "
            f"rebuilt networks use activation '{spec.activation}' for every row, so they do not compute the "
            f"originals' functions. Hyperparameters: {', '.join(hyper) or 'none'}. "
            f"Columns not kept: {', '.join(dropped) or 'none'}."
        ),
        dataset={"name": dataset or "unknown", "grayscale": spec.in_channels == 1},
        recipe={"source": "Small CNN Zoo, google-research/google-research dnn_predict_accuracy",
                "strides_assumed": list(spec.strides or ())},
        license="cc-by-4.0",
    )
