"""avatar: Gaussian-splatting personalised talking-head avatars.

Importing this package compiles and loads nothing: native backends load on first use
(see avatar.ops.backends()).
"""
__version__ = "0.1.0"
