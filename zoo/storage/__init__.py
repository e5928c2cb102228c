"""Zoo storage: Parquet shards + ``zoo.json`` manifest + dataset card; HDF5 export; verification.

Format: ``docs/FORMAT.md``. Loading works with plain ``datasets.load_dataset(ZOO_DIR)`` as well
as with :func:`load` (memory-mapped weights) and :meth:`Zoo.rebuild` (a row back to a network).
"""

from zoo.storage.format import SCHEMA_VERSION, SPLITS, model_id_of, split_of
from zoo.storage.manifest import Manifest, ShardInfo, ZooFormatError, ZooMetadata, ZooSchema
from zoo.storage.reader import Zoo, load, open_zoo
from zoo.storage.writer import ModelRecord, ZooWriter

__all__ = [
    "Manifest", "ModelRecord", "SCHEMA_VERSION", "SPLITS", "ShardInfo", "Zoo", "ZooFormatError", "ZooMetadata",
    "ZooSchema", "ZooWriter", "load", "model_id_of", "open_zoo", "split_of",
]
