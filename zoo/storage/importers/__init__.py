"""Importers: public model zoos turned into symzoo zoos (``symzoo import seed-pt|small-cnn-zoo``).

Each importer reads a foreign zoo, maps every model to a symzoo architecture's ``state_dict``
and writes one :class:`~zoo.storage.ModelRecord` per model with :class:`~zoo.storage.ZooWriter`,
storing the foreign zoo's own masks. Re-running an import on the same output resumes it.
"""

from zoo.storage.importers.seed_pt import import_seed_pt
from zoo.storage.importers.small_cnn_zoo import import_small_cnn_zoo

__all__ = ["import_seed_pt", "import_small_cnn_zoo"]
