"""Functional, stateless ops. `rasterize` renders 3D Gaussians (backends: cuda, gsplat, cpu, torch).

Importing this package compiles and loads nothing; native backends load on first use.
"""
from avatar.ops._backends import backends
from avatar.ops._errors import BackendUnavailable
from avatar.ops.rasterize import rasterize

__all__ = ["rasterize", "backends", "BackendUnavailable"]
