"""Metanetworks that read a network's weights and predict its properties."""
