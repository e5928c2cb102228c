"""Metanetworks that read a network's weights and predict its properties.

Modules: :mod:`~metanets.registry` (every metanet by name, :func:`register_metanet`),
:mod:`~metanets.views` (what a metanet reads from flat weights), :mod:`~metanets.models`,
:mod:`~metanets.nfn`, :mod:`~metanets.gmn` (the models), :mod:`~metanets.augment` (permutation
augmentation), :mod:`~metanets.config` (:class:`MetanetConfig`, the training protocol),
:mod:`~metanets.features` (a zoo's splits as metanet inputs and targets), :mod:`~metanets.metrics`
(R², Kendall τ), :mod:`~metanets.train` (the training loop and learning-rate search),
:mod:`~metanets.checkpoint` and :mod:`~metanets.cli`.
"""

from metanets.registry import METANETS, VIEWS, MetanetContext, MetanetEntry, get_metanet, register_metanet
from metanets.views import STATISTICS, statistics_view, trainable_view

__all__ = ["METANETS", "VIEWS", "MetanetContext", "MetanetEntry", "STATISTICS", "get_metanet", "register_metanet", "statistics_view",
           "trainable_view"]
