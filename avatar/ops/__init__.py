"""Functional, stateless ops. `rasterize` renders 3D Gaussians (backends: cuda, gsplat, cpu, torch);
`hash_encode` is the 2D multi-resolution hash-grid lookup of HashTriplane (backends: cuda, cpu, torch).

Importing this package compiles and loads nothing; native backends load on first use.
"""
from avatar.ops._backends import backends
from avatar.ops._errors import BackendUnavailable
from avatar.ops.hashgrid import hash_encode
from avatar.ops.rasterize import rasterize

__all__ = ["rasterize", "hash_encode", "backends", "BackendUnavailable"]
