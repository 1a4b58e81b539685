"""`avatar synth`: a procedural talking head with ground truth (avatar.synth.video)."""
from __future__ import annotations

import dataclasses

from avatar.commands import fail
from avatar.synth.video import SynthConfig


@dataclasses.dataclass
class Synth(SynthConfig):
    """Render a procedural talking head with speech-like audio and ground truth (poses, landmarks,
    mouth opening, blinks, masks) for tests, demos and the motion prior."""

    def main(self) -> int:
        try:
            self.run()
        except ValueError as e:
            return fail("synth", e)
        return 0
