"""`avatar demo`: the README's main job."""
from __future__ import annotations

import dataclasses
from pathlib import Path


@dataclasses.dataclass
class Demo:
    """Run the demo: render the built-in procedural head on a turntable (mp4 + PNG)."""

    out: Path = Path("outputs/demo")
    """Output folder."""

    def main(self) -> None:
        from avatar.apps.render import Render

        Render(out=self.out).main()
