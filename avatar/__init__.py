"""avatar: Gaussian-splatting personalised talking-head avatars.

Importing this package compiles and loads nothing: native backends load on first use
(see avatar.ops.backends()).
"""
import os as _os

# OpenMP threads (torch's and our CPU rasterizer's) busy-wait between parallel regions by default.
# When the cores are shared — a second process, a test that spawns workers, a loaded laptop — the
# spinning threads starve each other and small torch ops become ~1000x slower (measured: a 6k-element
# torch.floor took 11.5 ms instead of 0.03 ms; a training step 3.3 s instead of 0.08 s). Passive
# waiting costs little when the machine is idle. Only effective when set before torch is imported;
# a value the user set wins.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
