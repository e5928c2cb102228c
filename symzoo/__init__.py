"""symzoo: model zoos of standard and symmetry-reduced networks, and metanetworks that read them.

The public API in one place; each name lives in the package that owns it (``zoo`` for
architectures, symmetries and storage, ``generators`` for training zoos, ``metanets`` for
metanetworks, ``benchmarks`` for leaderboards and the paper's experiments; docs/ARCHITECTURE.md)::

    import symzoo

    spec = symzoo.get_arch("mlp-digits", "w_asym")
    symzoo.generate(symzoo.get_zoo_spec("digits-mlp"), "zoos/digits-std")
    zoo = symzoo.open_zoo("zoos/digits-std")
    run = symzoo.train_metanet("zoos/digits-std", symzoo.MetanetConfig("statnn", seeds=3))
"""

from benchmarks.leaderboard import BenchConfig, MetanetSetting, ZooEntry, load_bench_config, run_bench
from generators.data import ImageData, load_images
from generators.generate import generate
from generators.variational import PosteriorConfig, VITrainConfig, fit_variational
from generators.zoospec import ZooSpec, get_zoo_spec, load_zoo_spec
from metanets import MetanetContext, get_metanet, register_metanet
from metanets.train import MetanetConfig, train_metanet
from zoo import (
    PRESETS,
    VARIANTS,
    ArchSpec,
    ParamLayout,
    SpecError,
    get_arch,
    load_spec,
    permutation_spec,
    permute_model,
    random_permutations,
    spec_from_dict,
)
from zoo.errors import SymzooError
from zoo.interpolation import interpolate, mli_statistics
from zoo.matching import align_model, weight_matching
from zoo.storage import ModelRecord, ZooSchema, ZooWriter, load, open_zoo

__all__ = [
    # architectures and their symmetries
    "ArchSpec", "PRESETS", "VARIANTS", "get_arch", "load_spec", "spec_from_dict", "ParamLayout",
    "permutation_spec", "random_permutations", "permute_model", "align_model", "weight_matching",
    # zoos: generating, storing, reading
    "ZooSpec", "get_zoo_spec", "load_zoo_spec", "generate", "ImageData", "load_images",
    "open_zoo", "load", "ZooWriter", "ModelRecord", "ZooSchema",
    # metanetworks and leaderboards
    "MetanetConfig", "train_metanet", "register_metanet", "get_metanet", "MetanetContext",
    "BenchConfig", "ZooEntry", "MetanetSetting", "load_bench_config", "run_bench",
    # the paper's other experiments
    "interpolate", "mli_statistics", "PosteriorConfig", "VITrainConfig", "fit_variational",
    # errors
    "SymzooError", "SpecError",
]
