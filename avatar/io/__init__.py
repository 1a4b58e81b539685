"""File formats: standard 3DGS .ply (avatar.io.ply)."""
from avatar.io.ply import PlyError, SplatData, read_ply, write_ply

__all__ = ["PlyError", "SplatData", "read_ply", "write_ply"]
