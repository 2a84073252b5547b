"""Late fusion: one checkpoint that holds several trained heads over the same encoders.

    memocmt-ensemble --out late-fusion.safetensors fusion.safetensors audio-only.safetensors

Each head is trained on its own, e.g. the cross-modal head and its audio-only ablation from
the same recipe run; the ensemble multiplies their class probabilities (`fusion.EnsembleHead`).
On RAVDESS, whose two sentences carry no emotion, the audio-only head is as good as the
cross-modal one or better, while on speech whose words matter the cross-modal head is; the
product keeps most of both (measured in the model card). The result is an ordinary checkpoint:
`memocmt-eval`, `memocmt-export` and `memocmt-live` take it as they take any other, and its
fusion graph computes every head, so the runtime needs no change.

Members must share labels, encoders (frozen) and speaker normalisation (checked by the head
itself), including the speaker prior, which the ensemble keeps once; the voice signatures come from the first member that has
them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from .config import MemoCMTConfig
from .model import CheckpointError, MemoCMT, pop_voices, read_checkpoint, save_checkpoint

_AUDIO_FIELDS = ("audio_encoder", "audio_hidden_size", "audio_num_layers")
_TEXT_FIELDS = ("text_encoder", "text_hidden_size", "text_num_layers", "max_text_tokens")


def _uses(config: MemoCMTConfig, modality: str) -> bool:
    return config.modalities in ("both", modality)


def ensemble_config(members: list[MemoCMTConfig], names: list[str]) -> MemoCMTConfig:
    """The config of an ensemble of `members` (named by `names` in errors); raises CheckpointError
    when they cannot share encoders and labels."""
    if len(members) < 2:
        raise CheckpointError("An ensemble needs at least two checkpoints.")
    for config, name in zip(members, names):
        if config.members:
            raise CheckpointError(f"{name} is already an ensemble; list its members instead.")
        if (_uses(config, "audio") and not config.freeze_audio) or (_uses(config, "text") and not config.freeze_text):
            raise CheckpointError(f"{name} fine-tuned its encoders; only heads over frozen encoders can share them.")
    first = members[0]
    for config, name in zip(members[1:], names[1:]):
        if config.labels != first.labels:
            raise CheckpointError(f"{name} predicts {config.labels} but {names[0]} predicts {first.labels}; "
                                  "ensemble heads trained on the same labels, in the same order.")
    shared: dict = {}
    for modality, keys in (("audio", _AUDIO_FIELDS), ("text", _TEXT_FIELDS)):
        users = [(c, n) for c, n in zip(members, names) if _uses(c, modality)]
        for config, name in users[1:]:
            ours, theirs = [getattr(config, k) for k in keys], [getattr(users[0][0], k) for k in keys]
            if ours != theirs:
                raise CheckpointError(f"{name} uses the {modality} encoder {ours[0]!r} ({ours[1]}-d, {ours[2]} layers) "
                                      f"but {users[0][1]} uses {theirs[0]!r} ({theirs[1]}-d, {theirs[2]} layers); "
                                      "ensemble heads trained on the same encoders.")
        if users:
            shared.update({k: getattr(users[0][0], k) for k in keys})
    uses_audio = any(_uses(c, "audio") for c in members)
    uses_text = any(_uses(c, "text") for c in members)
    modalities = "both" if uses_audio and uses_text else ("audio" if uses_audio else "text")
    # The members' speaker_norm must agree; fusion.EnsembleHead refuses them when they do not.
    speaker_norm = next((c.speaker_norm for c in members if _uses(c, "audio")), "none")
    for config, name in zip(members[1:], names[1:]):
        if config.trim != first.trim:
            raise CheckpointError(f"{name} was trained on clips cut with trim={config.trim!r} but {names[0]} with "
                                  f"trim={first.trim!r}; ensemble heads trained on the same audio.")
    # Each member keeps its own temperature; the ensemble's own starts at 1 (memocmt.calibration fits it).
    return first.replace(modalities=modalities, speaker_norm=speaker_norm, temperature=1.0,
                         members=[c.to_dict() for c in members], **shared)


def ensemble_logprobs(member_logprobs: list[np.ndarray], temperatures: list[float]) -> np.ndarray:
    """What an EnsembleHead outputs before its own temperature, from its members' log-probabilities
    at temperature 1 (e.g. held-out cross-validation predictions): the sum of log_softmax(z / t)."""
    from .calibration import softmax

    return sum(np.log(np.maximum(softmax(z, t), 1e-30)) for z, t in zip(member_logprobs, temperatures))


def fit_ensemble_temperature(member_logprobs: list[np.ndarray], temperatures: list[float], targets) -> float:
    """The ensemble's own temperature, fitted on its members' held-out log-probabilities (memocmt.calibration):
    a product of probabilities counts shared evidence twice, so it is sharper than either member."""
    from .calibration import fit_temperature

    return fit_temperature(ensemble_logprobs(member_logprobs, temperatures), targets)


def build_ensemble(paths: list[str | Path]) -> MemoCMT:
    """One model whose head multiplies the probabilities of the heads saved in `paths`."""
    names = [str(p) for p in paths]
    read = [read_checkpoint(p) for p in paths]
    config = ensemble_config([c for c, _, _ in read], names)
    model = MemoCMT(config)
    voices = None
    prior: tuple[torch.Tensor, str] | None = None
    for member, (_, tensors, _), name in zip(model.head.members, read, names):
        found = pop_voices(tensors, name)
        voices = voices or found
        head = {k[len("head."):]: v for k, v in tensors.items() if k.startswith("head.")}
        try:
            member.load_state_dict(head)
        except RuntimeError as e:
            raise CheckpointError(f"{name} does not match its own config ({str(e).splitlines()[0]}).") from e
        if member.speaker_norm:
            if prior is None:
                prior = (member.speaker_prior, name)
            elif not torch.allclose(member.speaker_prior, prior[0], rtol=1e-5, atol=1e-6):
                raise CheckpointError(f"{name} and {prior[1]} were trained with different speaker priors (other "
                                      "training utterances); ensemble heads trained on the same data.")
    if prior is not None:
        model.head.speaker_prior.copy_(prior[0])
    model.voices = voices
    return model.eval()


def cli(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="memocmt-ensemble",
        description="Combine trained MemoCMT checkpoints over the same encoders into one checkpoint that "
                    "multiplies their class probabilities (late fusion).")
    parser.add_argument("checkpoints", nargs="+", help="member checkpoints (.safetensors), at least two")
    parser.add_argument("--out", required=True, help="the ensemble checkpoint to write")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    args = parser.parse_args(argv)
    out = Path(args.out)
    if out.resolve() in {Path(p).resolve() for p in args.checkpoints}:
        parser.error(f"--out {out} is one of the members; write the ensemble to a new file.")
    if out.exists() and not args.overwrite:
        parser.error(f"{out} exists; pass --overwrite to replace it, or choose another --out.")
    try:
        model = build_ensemble(args.checkpoints)
    except (CheckpointError, ValueError) as e:
        print(f"memocmt-ensemble: error: {e}", file=sys.stderr)
        return 1
    save_checkpoint(model, out, extra={"ensemble_of": [str(p) for p in args.checkpoints]})
    kinds = ", ".join(MemoCMTConfig.from_dict(m).modalities for m in model.config.members)
    print(f"Wrote {out}: {len(model.config.members)} heads ({kinds}), labels {', '.join(model.labels)}.")
    return 0


if __name__ == "__main__":
    sys.exit(cli())
