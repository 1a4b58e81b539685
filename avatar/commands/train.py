"""`avatar train DATA [--preset NAME] [--config.FIELD VALUE ...]`: the CLI of the avatar trainer
(avatar.train). The preset's YAML (configs/NAME.yaml or a path) sets the defaults of every
`TrainConfig` field, which `--help` lists and `--config.loss.ssim-weight 0.1`-style flags override
(gsplat's `tyro.extras.overridable_config_cli` pattern, over our YAML presets); `--set KEY=VALUE`
stays as an escape hatch for what a flag cannot spell (e.g. the phases list)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple

import tyro

from avatar.commands import fail
from avatar.train.config import TrainConfig, load_config

DEFAULT_PRESET = "tiny"


def _parse_set(items) -> Dict[str, Any]:
    import yaml

    out: Dict[str, Any] = {}
    for it in items:
        if "=" not in it:
            raise ValueError(f"--set expects KEY=VALUE (e.g. loss.ssim_weight=0.1), got {it!r}")
        k, v = it.split("=", 1)
        out[k.strip()] = yaml.safe_load(v)
    return out


def mediapipe_detector():
    """A fresh mediapipe face-mesh detector (capture.landmarks) for the held-out lip metrics: the CLI layer
    is the one that may hand capture's tools to training."""
    from capture.landmarks import make_backend

    return make_backend("mediapipe", max_faces=1)


@dataclass
class Train:
    """Train a talking-head avatar from a capture folder (static -> deformation -> joint phases)."""

    data: tyro.conf.Positional[Path]
    """Capture folder written by `avatar capture`."""
    preset: str = DEFAULT_PRESET
    """Config preset: a name in configs/ (tiny, phone, multiview, quality) or a YAML file; it sets the
    defaults shown for every --config.* flag below."""
    out: Optional[Path] = None
    """Output folder (default outputs/train/<capture folder name>)."""
    resume: bool = False
    """Continue from the newest checkpoint in the output folder (with its saved config)."""
    set: Tuple[str, ...] = ()
    """Config overrides KEY=VALUE with dotted keys and YAML values, e.g. loss.ssim_weight=0.1."""
    no_progress: bool = False
    """Hide the progress bar."""
    prior: Optional[Path] = None
    """Motion-prior checkpoint (`avatar prior train`): the deformation network takes motion codes in the
    prior's motion space as input (so `avatar drive --prior` can animate it from any audio); recorded in
    avatar.pt. The capture must use the prior's motion space."""
    prior_finetune: bool = False
    """With --prior: also fine-tune the prior on this capture (OUT/prior_finetuned.pt; drive uses it)."""
    config: TrainConfig = field(default_factory=lambda: load_config(DEFAULT_PRESET))
    """The training configuration (defaults: the preset's)."""

    @classmethod
    def cli_default(cls, argv: Sequence[str]) -> "Train":
        """The default instance for `avatar train ARGV`: TrainConfig defaults from the preset named
        by --preset in argv (two-stage parse, so --help shows the preset's values)."""
        preset = DEFAULT_PRESET
        for i, a in enumerate(argv):
            if a == "--preset" and i + 1 < len(argv):
                preset = argv[i + 1]
            elif a.startswith("--preset="):
                preset = a.split("=", 1)[1]
        return cls(data=tyro.MISSING, preset=preset, config=load_config(preset))

    def resolved_config(self) -> TrainConfig:
        """self.config with --set and --prior applied (strict: unknown keys are ConfigErrors)."""
        from avatar.model.config import to_dict
        from avatar.train.config import _deep_merge, config_from_dict, expand_dotted

        overrides = _parse_set(self.set)
        if self.prior is not None:
            overrides.update({"prior": str(self.prior), "prior_finetune": self.prior_finetune})
        if not overrides:
            return self.config.validate()
        return config_from_dict(_deep_merge(to_dict(self.config), expand_dotted(overrides)), "--set")

    def main(self) -> int:

        from avatar.model.config import ConfigError
        from avatar.train.trainer import TrainingError, train

        out = self.out or Path("outputs") / "train" / Path(self.data).name
        if self.prior_finetune and self.prior is None:
            return fail("train", "--prior-finetune needs --prior PRIOR.pt")
        from avatar.data import load_capture
        from avatar.io.outdir import check_dir, claim_dir

        try:
            inputs = [self.data, self.prior]
            check_dir(out, "train", arg="--out", inputs=inputs, adopt=adopt_train)  # before any work
            config = self.resolved_config()
            dataset = load_capture(self.data)
            claim_dir(out, "train", arg="--out", inputs=inputs, adopt=adopt_train).add(*TRAIN_FILES)
            path = train(self.data, out, config=config, progress=not self.no_progress, resume=self.resume,
                         dataset=dataset, make_detector=mediapipe_detector)
        except (TrainingError, ConfigError, ValueError) as e:  # PriorCheckpointError is a ValueError
            return fail("train", e)
        print(f"avatar written to {path}")
        return 0


def adopt_train(root: Path):
    """A training folder written before folders carried a marker (its config.yaml, avatar.pt or checkpoints/):
    -> what the trainer writes there (avatar.io.outdir adopts it), else None."""
    if not any((root / n).exists() for n in ("config.yaml", "avatar.pt", "checkpoints")):
        return None
    return TRAIN_FILES


# what the trainer writes in its folder (avatar.train.trainer); listed in the folder's manifest
TRAIN_FILES = ["avatar.pt", "config.yaml", "eval.json", "prior_finetuned.pt", "checkpoints/", "previews/", "logs/"]
