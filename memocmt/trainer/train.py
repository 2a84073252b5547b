"""Training: `memocmt-train --config training/configs/edge-ravdess.yaml [--set key=value ...]`
(the command line is memocmt.trainer.cli).

With frozen encoders (the paper's setting and the default) every utterance is encoded once into
the embedding cache (memocmt.trainer.embed_cache) and only the fusion head trains, on padded batches
of cached states: minutes on a laptop CPU. With `model.freeze_audio/freeze_text: false` the
encoders are fine-tuned end to end from the audio files (GPU advised; no cache).

A run folder holds `train_config.yaml`, `metrics.jsonl` (one line per epoch), `best.safetensors`
(best validation UA), `last.safetensors`, `state.pt` (optimizer, scheduler, RNG states, epoch:
what `--resume RUN_DIR` needs to continue exactly where an interrupted run stopped) and the
test-split report of the best model.

`memocmt-train --config ... --cv-folds 4` chooses the number of epochs (and, with `cv_candidates`
in the config, one of a few config variants) by speaker-disjoint cross-validation over the train
and val speakers instead of by the val split alone, then retrains on all of them for that many
epochs (memocmt.trainer.crossval.train_with_cv); the CV table goes to `cv.json` and `cv.md` in the run folder.

Several GPUs: `torchrun --nproc_per_node=4 -m memocmt.trainer --config ...` runs
DistributedDataParallel (WORLD_SIZE > 1 in the environment; nccl on GPUs, gloo on CPU, where the
tests run it with two processes); rank 0 writes the run folder.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import random
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from ..manifest import Manifest, ManifestError, map_labels, read_manifest, validate_manifest
from ..perturb import Acoustic, parse_perturbations

logger = logging.getLogger("memocmt")

OPTIMIZERS = ("adam", "adamw")
SCHEDULERS = ("step", "cosine", "none")
DEVICES = ("auto", "cpu", "cuda")
BAD_FILE_POLICIES = ("skip", "stop")
BALANCES = ("", "class", "corpus", "corpus+class")  # groups an epoch draws evenly from ("": every utterance once)


@dataclass
class TrainConfig:
    """Everything a training run depends on; stored in its run folder as train_config.yaml."""

    manifests: list[str] = field(default_factory=list)  # JSONL manifests, combined (relative to the working dir)
    labels: list[str] = field(default_factory=list)  # class order; [] = the labels the manifests use
    label_map: dict = field(default_factory=dict)  # old label -> new label (or null to drop), applied first
    preset: str = "edge"  # memocmt.config preset the model starts from
    model: dict = field(default_factory=dict)  # MemoCMTConfig field overrides (encoders, d_model, ...)
    optimizer: str = "adam"  # adam | adamw
    lr: float = 1e-4  # the paper: Adam, 1e-4
    weight_decay: float = 0.0
    batch_size: int = 1  # the paper: 1
    epochs: int = 30
    scheduler: str = "step"  # step (the paper's StepLR) | cosine | none
    step_size: int = 10  # StepLR: epochs between decays
    gamma: float = 0.1  # StepLR: decay factor
    class_weights: bool = False  # weight the loss by inverse class frequency
    # "" (off): each epoch sees every training utterance once. "class", "corpus", "corpus+class": each epoch
    # draws as many utterances with replacement, every group (class, corpus, or corpus and class) equally
    # likely, so a small corpus is not drowned by a large one (leave class_weights off with a class balance)
    balance: str = ""
    # utterances drawn per training epoch (0 = as many as there are training utterances). With `balance` they
    # are drawn with replacement; without, a fresh random subset each epoch. Bounds what an epoch costs when a
    # large corpus joins a small one (an epoch over all of nEMO costs several RAVDESS epochs)
    epoch_size: int = 0
    seed: int = 0
    grad_clip: float = 0.0  # max gradient norm; 0 disables clipping
    feature_noise: float = 0.0  # training only: Gaussian noise on cached audio states, in units of their std
    frame_drop: float = 0.0  # training only: fraction of cached audio frames dropped at random
    crop_frames: int = 0  # training only: random crop of cached audio states to this many frames (0 = whole)
    # training only, speaker_norm models: probability that an utterance's speaker statistics pool the
    # head's prior with a random subset of 1 to 20 of its speaker's utterances (itself included)
    # instead of all of them, as live adaptation has them early in a session
    speaker_subsample: float = 0.0
    device: str = "auto"  # auto | cpu | cuda
    num_workers: int = 0  # DataLoader workers
    threads: int = 0  # CPU threads for PyTorch; 0 keeps its default (1 is fastest on a busy shared machine)
    on_bad_file: str = "stop"  # skip (count and list) | stop (before training starts)
    allow_speaker_overlap: bool = False  # the paper's random splits put speakers in train and test
    cache_dir: str = ".cache/embeddings"  # embedding cache for frozen encoders
    out_dir: str = "runs"  # run folders are created here
    run_name: str = ""  # default: <config name>-<timestamp>
    stop_epoch: int = 0  # stop after this epoch of the `epochs`-long schedule (0 = run all `epochs`)
    train_on_val: bool = False  # train on train + val and keep the last epoch (no val selection; set after CV)
    cv_folds: int = 0  # speaker-disjoint cross-validation folds over the train + val speakers (0 = no CV)
    cv_corpora: list[str] = field(default_factory=list)  # corpora whose speakers are folded and scored; [] = all
    cv_candidates: dict = field(default_factory=dict)  # name -> config overrides compared by CV with the config itself
    # processes that train CV folds side by side, each with `threads` CPU threads (0 = as many as the cores
    # allow; 1 = one fold after another). Folds are seeded alike either way, so the result is the same.
    cv_workers: int = 0
    # training only, frozen encoders: a perturbed copy of every training utterance per sox effect line
    # ("speed 0.9", "pitch 200" cents, "tempo 1.1") or acoustic condition ("pink 5:30", "babble 5:25",
    # "room 0.2:1 0.5:4"; memocmt.perturb, memocmt.degrade), each copy a voice of its own
    perturb: list[str] = field(default_factory=list)
    perturb_corpora: list[str] = field(default_factory=list)  # corpora whose utterances are perturbed; [] = all

    def validate(self) -> "TrainConfig":
        for name, value, choices in (("optimizer", self.optimizer, OPTIMIZERS), ("scheduler", self.scheduler, SCHEDULERS),
                                     ("device", self.device, DEVICES), ("on_bad_file", self.on_bad_file, BAD_FILE_POLICIES),
                                     ("balance", self.balance, BALANCES)):
            if value not in choices:
                raise ValueError(f"{name} {value!r} is not one of {', '.join(choices)}.")
        if not self.manifests:
            raise ValueError("The training config names no manifests; set `manifests: [path.jsonl, ...]`.")
        if self.epoch_size < 0:
            raise ValueError(f"epoch_size {self.epoch_size} must be 0 (every training utterance) or a positive number.")
        if self.batch_size < 1 or self.epochs < 1 or self.lr <= 0:
            raise ValueError("batch_size and epochs must be at least 1 and lr positive.")
        if not 0.0 <= self.speaker_subsample <= 1.0:
            raise ValueError(f"speaker_subsample {self.speaker_subsample} must be a probability between 0 and 1.")
        if not 0 <= self.stop_epoch <= self.epochs:
            raise ValueError(f"stop_epoch {self.stop_epoch} must be between 0 and epochs ({self.epochs}).")
        if self.cv_workers < 0:
            raise ValueError("cv_workers must be 0 (as many as the CPU cores allow) or a positive number of processes.")
        if self.cv_folds == 1 or self.cv_folds < 0:
            raise ValueError("cv_folds must be 0 (no cross-validation) or at least 2.")
        parse_perturbations(self.perturb)
        for name, overrides in self.cv_candidates.items():
            if name == "base" or not isinstance(overrides, dict):
                raise ValueError(f"cv_candidates[{name!r}] must be a mapping of config overrides (and not named 'base').")
        return self

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"Unknown training config key(s) {unknown}; valid keys: {', '.join(sorted(known))}.")
        typed = {}
        for f in fields(cls):
            if f.name in data and f.type in ("int", "float", "bool") and not isinstance(data[f.name], bool if f.type == "bool" else (int, float)):
                try:  # YAML reads 1e-4 (no dot) as a string
                    typed[f.name] = {"int": int, "float": float, "bool": _to_bool}[f.type](data[f.name])
                except ValueError as e:
                    raise ValueError(f"Training config key {f.name} must be a {f.type}, not {data[f.name]!r}.") from e
        return cls(**{**data, **typed}).validate()


def _to_bool(value) -> bool:
    text = str(value).lower()
    if text not in ("true", "false", "1", "0", "yes", "no"):
        raise ValueError(text)
    return text in ("true", "1", "yes")


def merge_config(base: dict, changes: dict) -> dict:
    """`base` with `changes` applied; nested mappings (`model`) are merged key by key."""
    out = dict(base)
    for key, value in changes.items():
        out[key] = merge_config(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def load_config(path: str | os.PathLike | None, overrides: list[str] = ()) -> TrainConfig:
    """A TrainConfig from a YAML file plus `key=value` overrides (`model.d_model=256`; values parsed as YAML)."""
    import yaml

    data: dict = {}
    if path is not None:
        try:
            data = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as e:
            raise ValueError(f"Cannot read training config {path}: {e}") from e
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ValueError(f"Override {item!r} is not key=value.")
        value = yaml.safe_load(raw) if raw else ""
        target = data
        *parents, leaf = key.split(".")
        for p in parents:
            target = target.setdefault(p, {})
        target[leaf] = value
    return TrainConfig.from_dict(data)


# ---------------------------------------------------------------------------- data


def load_training_manifest(config: TrainConfig) -> tuple[Manifest, list]:
    """The combined, validated manifest and the rows skipped (or ManifestError before any work)."""
    items = []
    for path in config.manifests:
        m = read_manifest(path)
        if config.label_map:
            mapping = {label: config.label_map.get(label, label) for label in {u.label for u in m}}
            m = map_labels(m, mapping)
        items.extend(m.items)
    combined = Manifest.from_items(items)
    labels = config.labels or list(combined.labels)
    # A label outside `labels` is a bad row: validate_manifest names it, then stops or skips it.
    result = validate_manifest(combined, labels=labels, on_error="skip" if config.on_bad_file == "skip" else "raise",
                               allow_speaker_overlap=config.allow_speaker_overlap, required_splits=("train", "val"))
    return result.manifest, list(result.problems)


def pad_states(states: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(L, T_i, D) tensors -> zero-padded (B, L, T_max, D) float32 and lengths (B,)."""
    lengths = torch.tensor([s.shape[1] for s in states], dtype=torch.long)
    out = torch.zeros(len(states), states[0].shape[0], int(lengths.max()), states[0].shape[2])
    for i, s in enumerate(states):
        out[i, :, : s.shape[1]] = s.float()
    return out, lengths


class CachedDataset(torch.utils.data.Dataset):
    """Cached states; with augmentation (noise, frame drop, crop length, speaker statistics from
    subsets of the speaker's utterances) for training."""

    def __init__(self, split, augment: tuple[float, float, int] = (0.0, 0.0, 0), speaker_subsample: float = 0.0,
                 prior: torch.Tensor | None = None, versions: bool = False):
        self.split, self.noise, self.drop, self.crop = split, *augment
        # with perturbed copies (same id as their utterance): an epoch draws one version of each utterance
        self.versions = None
        if versions:
            groups: dict = {}
            for i, id_ in enumerate(split.ids):
                groups.setdefault(id_, []).append(i)
            self.versions = list(groups.values())
        self.speaker_subsample = speaker_subsample if split.speaker_stats else 0.0
        self.prior = None if prior is None else prior.numpy()
        if self.speaker_subsample:
            groups: dict = {}
            for i, speaker in enumerate(split.speakers):
                groups.setdefault(speaker if speaker is not None else ("utterance", i), []).append(i)
            self.same_speaker = [groups[s if s is not None else ("utterance", i)] for i, s in enumerate(split.speakers)]

    def __len__(self) -> int:
        return len(self.split)

    @property
    def epoch_targets(self) -> list[int]:
        """Class ids of the utterances one epoch sees (one per utterance, whichever version)."""
        return [self.split.targets[g[0]] for g in self.versions] if self.versions else self.split.targets

    def __getitem__(self, i: int):
        audio, text = self.split.audio[i], self.split.text[i]
        if audio is not None and self.crop and audio.shape[1] > self.crop:
            start = int(torch.randint(0, audio.shape[1] - self.crop + 1, ()))
            audio = audio[:, start : start + self.crop]
        if audio is not None and (self.noise or self.drop):
            audio = audio.float()
            if self.drop and audio.shape[1] > 4:
                keep = torch.rand(audio.shape[1]) >= self.drop
                audio = audio[:, keep] if keep.sum() >= 2 else audio
            if self.noise:  # std over frames from sums of squares: ~10x faster on CPU than Tensor.std here
                n = audio.shape[1]
                mean = audio.mean(dim=1, keepdim=True)
                var = ((audio * audio).mean(dim=1, keepdim=True) - mean * mean).clamp(min=0) * (n / max(n - 1, 1))
                audio = audio + self.noise * var.sqrt() * torch.randn_like(audio)
        stats = self.split.speaker_stats[i] if self.split.speaker_stats else None
        if self.speaker_subsample and float(torch.rand(())) < self.speaker_subsample:
            from ..speaker_norm import ADAPT_WINDOW, pool_stats

            others = [j for j in self.same_speaker[i] if j != i]
            k = int(torch.randint(0, min(len(others), ADAPT_WINDOW - 1) + 1, ()))
            picked = [others[j] for j in torch.randperm(len(others))[:k].tolist()]
            own = self.split.utterance_stats
            stats = torch.from_numpy(pool_stats(np.stack([own[i]] + [own[j] for j in picked]), self.prior))
        return audio, text, self.split.targets[i], stats


def collate_cached(items):
    """Items of CachedDataset -> the head's inputs (audio states, lengths, text states, lengths, speaker statistics) and targets."""
    audio, text, targets, speaker_stats = zip(*items)
    a = pad_states(list(audio)) if audio[0] is not None else (None, None)
    t = pad_states(list(text)) if text[0] is not None else (None, None)
    s = torch.stack(speaker_stats) if speaker_stats[0] is not None else None
    return (a[0], a[1], t[0], t[1], s), torch.tensor(targets)


class AudioTextDataset(torch.utils.data.Dataset):
    """Raw audio and text, for fine-tuning encoders."""

    def __init__(self, manifest: Manifest, trim: str = "none"):
        self.items, self.index, self.trim = manifest.items, manifest.label_to_id(), trim

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        from ..audio import load_audio
        from ..live.vad import apply_trim

        u = self.items[i]
        return apply_trim(load_audio(u.audio), self.trim), u.text, self.index[u.label]


def make_raw_collate(model):
    def collate(items):
        audios, texts, targets = zip(*items)
        return (model.prepare(list(audios), list(texts)),), torch.tensor(targets)
    return collate


def to_device(inputs: tuple, device) -> tuple:
    return tuple(x.to(device) if x is not None else None for x in inputs)


# ---------------------------------------------------------------------------- loop


@torch.no_grad()
def predict(module: nn.Module, loader, device) -> tuple[np.ndarray, np.ndarray]:
    """(targets, probabilities) over a loader."""
    module.eval()
    targets, probs = [], []
    for inputs, y in loader:
        logits = module(*to_device(inputs, device))
        probs.append(torch.softmax(logits.float(), dim=-1).cpu())
        targets.append(y)
    return torch.cat(targets).numpy(), torch.cat(probs).numpy()


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for but no CUDA GPU is available; use device=auto or cpu.")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and "LOCAL_RANK" in os.environ:
        return torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    return torch.device(name)


def make_optimizer(config: TrainConfig, params: list) -> tuple[torch.optim.Optimizer, object]:
    """The config's optimizer and LR scheduler (the schedule spans `epochs`, even with `stop_epoch`)."""
    opt_cls = torch.optim.Adam if config.optimizer == "adam" else torch.optim.AdamW
    optimizer = opt_cls(params, lr=config.lr, weight_decay=config.weight_decay)
    if config.scheduler == "step":
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=config.step_size, gamma=config.gamma)
    elif config.scheduler == "cosine":
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs)
    else:
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    return optimizer, scheduler


def epoch_sampler(dataset, seed: int, epoch: int, balance: str = "", size: int = 0):
    """The order depends on (seed, epoch) only, so a resumed run sees the same batches. A dataset with
    perturbed copies (CachedDataset.versions) yields one version of each utterance, drawn uniformly.
    With `balance` (see TrainConfig.balance) the utterances are drawn with replacement, each group equally likely.
    `size` (TrainConfig.epoch_size) is the number of draws (0: one per utterance)."""
    generator = torch.Generator().manual_seed(seed * 100003 + epoch)
    versions = getattr(dataset, "versions", None)
    if not versions and not balance and not size:
        return torch.utils.data.RandomSampler(dataset, generator=generator)
    versions = versions or [[i] for i in range(len(dataset))]
    n = size or len(versions)
    if balance:
        groups = balance_groups(dataset, balance, [v[0] for v in versions])
        counts: dict = {}
        for g in groups:
            counts[g] = counts.get(g, 0) + 1
        weights = torch.tensor([1.0 / (len(counts) * counts[g]) for g in groups], dtype=torch.float64)
        order = torch.multinomial(weights, n, replacement=True, generator=generator).tolist()
        picks = torch.randint(0, 2**31 - 1, (len(order),), generator=generator).tolist()
        return [versions[i][picks[k] % len(versions[i])] for k, i in enumerate(order)]
    order = torch.randperm(len(versions), generator=generator).tolist()
    picks = torch.randint(0, 2**31 - 1, (len(versions),), generator=generator).tolist()
    if size:  # a subset (or, when `size` exceeds the utterances, whole passes and then a subset)
        order = (order * (size // len(order) + 1))[:size]
    return [versions[i][picks[i] % len(versions[i])] for i in order]


def balance_groups(dataset, balance: str, indices: list[int]) -> list[tuple]:
    """The sampling group of each item in `indices`: its class, its corpus, or both."""
    if isinstance(dataset, CachedDataset):
        targets = dataset.split.targets
        corpora = [s[0] if s is not None else "" for s in dataset.split.speakers] if dataset.split.speakers else [""] * len(targets)
    else:  # AudioTextDataset
        targets = [dataset.index[u.label] for u in dataset.items]
        corpora = [u.corpus for u in dataset.items]
    keys = {"class": lambda i: (targets[i],), "corpus": lambda i: (corpora[i],), "corpus+class": lambda i: (corpora[i], targets[i])}
    return [keys[balance](i) for i in indices]


def class_weight(targets, n_classes: int, device) -> torch.Tensor:
    counts = np.bincount(targets, minlength=n_classes).astype(np.float64)
    return torch.tensor(len(targets) / (n_classes * np.maximum(counts, 1)), dtype=torch.float32, device=device)


def train_epoch(trained: nn.Module, loader, loss_fn, optimizer, params: list, grad_clip: float, device,
                bar=None) -> tuple[float, float]:
    """One pass over `loader`; (mean loss, accuracy) on the training batches."""
    trained.train()
    total_loss, correct, seen = 0.0, 0, 0
    for inputs, y in bar if bar is not None else loader:
        y = y.to(device)
        logits = trained(*to_device(inputs, device))
        loss = loss_fn(logits, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip > 0:
            nn.utils.clip_grad_norm_(params, grad_clip)
        optimizer.step()
        total_loss += loss.item() * len(y)
        correct += int((logits.argmax(-1) == y).sum())
        seen += len(y)
        if bar is not None:
            bar.set_postfix(loss=f"{total_loss / seen:.3f}", acc=f"{correct / seen:.3f}")
    return total_loss / seen, correct / seen


@dataclass
class EpochRecord:
    """One line of metrics.jsonl."""

    epoch: int
    train_loss: float
    train_accuracy: float
    val_ua: float | None  # None when training on train + val (train_on_val)
    val_wa: float | None
    lr: float
    seconds: float
    best: bool


def train(config: TrainConfig, run_dir: str | os.PathLike | None = None, *, resume: bool = False,
          progress: bool = True, on_epoch_end: Callable[[EpochRecord], None] | None = None) -> Path:
    """Train (or resume) a run; returns the run folder. `on_epoch_end` runs after each epoch is saved."""
    import yaml
    from tqdm.auto import tqdm

    from ..config import preset
    from ..metrics import classification_report
    from ..model import MemoCMT, save_checkpoint

    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    device = resolve_device(config.device)
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
    main = rank == 0
    run_dir = Path(run_dir or Path(config.out_dir) / (config.run_name or time.strftime("run-%Y%m%d-%H%M%S")))
    state_path = run_dir / "state.pt"
    if resume and not state_path.is_file():
        raise FileNotFoundError(f"{run_dir} has no state.pt to resume from; was it started by memocmt-train?")

    manifest, problems = load_training_manifest(config)
    labels = list(manifest.labels)
    if config.threads > 0:
        torch.set_num_threads(config.threads)
    seed_everything(config.seed)
    model = MemoCMT(preset(config.preset, labels=labels, **config.model)).to(device)
    frozen = model.config.freeze_audio and model.config.freeze_text
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "train_config.yaml").write_text(yaml.safe_dump(asdict(config), sort_keys=False))
        (run_dir / "model_config.json").write_text(json.dumps(model.config.to_dict(), indent=2))
        if not resume:  # a new run in an old run's folder replaces its checkpoints, so its metrics go too
            (run_dir / "metrics.jsonl").unlink(missing_ok=True)
        logger.info("Training on %d utterances, classes %s\n%s", len(manifest), labels, manifest.summary())

    splits = {name: manifest.split(name) for name in ("train", "val", "test")}
    if config.train_on_val:  # the epoch count was chosen elsewhere (cross-validation): no val selection
        splits["train"] = Manifest.from_items(splits["train"].items + splits["val"].items, manifest.labels)
        splits["val"] = Manifest.from_items((), manifest.labels)
    if config.perturb and not frozen:
        raise ValueError("`perturb` works on cached embeddings, so it needs frozen encoders; "
                         "remove it or freeze both encoders.")
    if frozen:
        from .embed_cache import EmbeddedSplit, EmbeddingCache, attach_speaker_stats, embed_manifest, fit_voices, prior_stats

        cache = EmbeddingCache(config.cache_dir, model)
        embedded = {name: embed_manifest(cache, m, on_bad_file=config.on_bad_file, progress=progress and main, desc=f"embed {name}")
                    for name, m in splits.items() if len(m)}
        copies = perturbed_copies(cache, splits["train"], config, progress=progress and main)
        for name, e in embedded.items():
            problems += e.skipped
            if not len(e):
                raise ManifestError(f"The {name} split has no usable utterances left after skipping bad files.")
        problems += [p for c in copies for p in c.skipped]
        prior = None
        if model.head.speaker_norm:
            attach_speaker_stats(list(embedded.values()) + copies)  # each speaker's statistics over all its utterances, no labels
            model.voices = fit_voices([embedded[n] for n in ("train", "val") if n in embedded])  # real voices only
        if copies:
            logger.info("Training on %d utterances; each epoch draws each one as itself or as one of its %d perturbed "
                        "copies (%s)", len(embedded["train"]), len(copies), ", ".join(config.perturb))
            embedded["train"] = EmbeddedSplit.concat([embedded["train"], *copies])
        if model.head.speaker_norm:
            prior = prior_stats(embedded["train"])
            model.head.speaker_prior.copy_(prior)
        module: nn.Module = model.head
        datasets = {name: CachedDataset(e, (config.feature_noise, config.frame_drop, config.crop_frames), config.speaker_subsample,
                                        prior, versions=bool(copies))
                    if name == "train" else CachedDataset(e) for name, e in embedded.items()}
        collate = collate_cached
        train_targets = datasets["train"].epoch_targets
        if main:
            logger.info("Embedding cache: %d hits, %d misses, %d corrupt entries recomputed",
                        cache.stats.hits, cache.stats.misses, len(cache.stats.corrupt))
    else:
        module = model
        datasets = {name: AudioTextDataset(m, model.config.trim) for name, m in splits.items() if len(m)}
        collate = make_raw_collate(model)
        train_targets = splits["train"].targets()
    if main and problems:
        (run_dir / "skipped.txt").write_text("".join(f"{p}\n" for p in problems))
        logger.warning("Skipped %d bad row(s); they are listed in %s", len(problems), run_dir / "skipped.txt")

    weight = class_weight(train_targets, len(labels), device) if config.class_weights else None
    loss_fn = nn.CrossEntropyLoss(weight=weight)
    params = [p for p in module.parameters() if p.requires_grad]
    optimizer, scheduler = make_optimizer(config, params)
    trained = module
    if world > 1:
        trained = nn.parallel.DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None)

    start_epoch, best_ua, best_epoch = 1, -1.0, 0
    if resume:
        state = torch.load(state_path, map_location="cpu", weights_only=False)
        module.load_state_dict(state["module"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        set_rng_state(state["rng"])
        start_epoch, best_ua, best_epoch = state["epoch"] + 1, state["best_ua"], state["best_epoch"]
        _truncate_metrics(run_dir / "metrics.jsonl", state["epoch"])
        logger.info("Resuming %s after epoch %d (best val UA %.4f at epoch %d)", run_dir, state["epoch"], best_ua, best_epoch)

    loader_args = dict(batch_size=config.batch_size, collate_fn=collate, num_workers=config.num_workers)
    val_loader = torch.utils.data.DataLoader(datasets["val"], **loader_args) if "val" in datasets else None
    extra = {"labels": labels, "manifests": config.manifests, "seed": config.seed, "balance": config.balance,
             "epoch_size": config.epoch_size}
    last_epoch = config.stop_epoch or config.epochs
    epochs = tqdm(range(start_epoch, last_epoch + 1), desc="epochs", disable=not (progress and main),
                  initial=start_epoch - 1, total=last_epoch)
    for epoch in epochs:
        started = time.perf_counter()
        if world > 1 and (getattr(datasets["train"], "versions", None) or config.balance or config.epoch_size):  # the same draw on every rank, then one share each
            order = epoch_sampler(datasets["train"], config.seed, epoch, config.balance, config.epoch_size)
            order += order[: -len(order) % world]  # equal shares, as DistributedSampler pads
            sampler = order[rank::world]
        elif world > 1:
            sampler = torch.utils.data.distributed.DistributedSampler(datasets["train"], shuffle=True, seed=config.seed)
            sampler.set_epoch(epoch)
        else:
            sampler = epoch_sampler(datasets["train"], config.seed, epoch, config.balance, config.epoch_size)
        loader = torch.utils.data.DataLoader(datasets["train"], sampler=sampler, **loader_args)
        bar = tqdm(loader, desc=f"epoch {epoch}", leave=False, disable=not (progress and main))
        train_loss, train_acc = train_epoch(trained, loader, loss_fn, optimizer, params, config.grad_clip, device, bar)
        lr = optimizer.param_groups[0]["lr"]
        scheduler.step()
        if val_loader is not None:
            y_val, p_val = predict(module, val_loader, device)
            report = classification_report(y_val, p_val.argmax(1), labels)
            val_ua, val_wa = report.ua, report.wa
            improved = val_ua > best_ua
        else:  # train_on_val: the last epoch is the model (val_ua null in metrics.jsonl and the checkpoint)
            val_ua = val_wa = None
            improved = True
        if improved:
            best_ua, best_epoch = (val_ua if val_ua is not None else best_ua), epoch
        record = EpochRecord(epoch, train_loss, train_acc, val_ua, val_wa, lr, time.perf_counter() - started, improved)
        epochs.set_postfix(loss=f"{record.train_loss:.3f}", val_ua=f"{val_ua if val_ua is not None else float('nan'):.3f}",
                           best=f"{best_ua:.3f}")
        if main:
            if improved:
                save_checkpoint(model, run_dir / "best.safetensors", extra={**extra, "epoch": epoch, "val_ua": val_ua})
            save_checkpoint(model, run_dir / "last.safetensors", extra={**extra, "epoch": epoch, "val_ua": val_ua})
            with (run_dir / "metrics.jsonl").open("a") as f:
                f.write(json.dumps(asdict(record)) + "\n")
            tmp = state_path.with_name("state.pt.tmp")
            torch.save({"module": module.state_dict(), "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(), "rng": rng_state(), "epoch": epoch,
                        "best_ua": best_ua, "best_epoch": best_epoch}, tmp)
            tmp.replace(state_path)
        if on_epoch_end is not None:
            on_epoch_end(record)

    if main and "test" in datasets:
        from ..evaluate import write_report
        from ..model import read_checkpoint

        _, tensors, _ = read_checkpoint(run_dir / "best.safetensors")
        model.load_state_dict(tensors, strict=False)
        test_loader = torch.utils.data.DataLoader(datasets["test"], **loader_args)
        y_test, p_test = predict(module, test_loader, device)
        report = classification_report(y_test, p_test.argmax(1), labels, p_test)
        write_report(report, run_dir / "test_metrics.json", title=f"Test split, best epoch {best_epoch}",
                     extra={"best_epoch": best_epoch, "val_ua": best_ua if val_loader is not None else None})
        logger.info("Test UA %.4f, WA %.4f (%s epoch %d, val UA %.4f)", report.ua, report.wa,
                    "best" if val_loader is not None else "last", best_epoch, best_ua if val_loader is not None else float("nan"))
    if world > 1:
        torch.distributed.destroy_process_group()
    return run_dir


def perturbed_copies(cache, manifest: Manifest, config: TrainConfig, *, progress: bool = False) -> list:
    """One EmbeddedSplit per `config.perturb` effect: perturbed copies of the utterances of `manifest`
    in `config.perturb_corpora` (all corpora if empty), each speaker's copies a voice of their own."""
    from .embed_cache import embed_manifest

    source = Manifest.from_items([u for u in manifest.items if not config.perturb_corpora or u.corpus in config.perturb_corpora],
                                 manifest.labels)
    if not config.perturb or not len(source):
        return []
    clips = [str(u.audio) for u in source.items]  # babble is made from the training clips themselves
    perturbations = [p.with_sources(clips) if isinstance(p, Acoustic) else p for p in parse_perturbations(config.perturb)]
    return [embed_manifest(cache, source, on_bad_file=config.on_bad_file, progress=progress, desc=f"embed {p.spec}",
                           perturbation=p) for p in perturbations]


def _truncate_metrics(path: Path, last_epoch: int) -> None:
    """Drop metric lines of epochs after the saved state (an epoch interrupted before its state was saved)."""
    if path.is_file():
        lines = [line for line in path.read_text().splitlines() if line.strip()]
        kept = [line for line in lines if json.loads(line)["epoch"] <= last_epoch]
        path.write_text("".join(line + "\n" for line in kept))


def fit_checkpoint_voices(config: TrainConfig, checkpoint: str | Path) -> Path:
    """Give a trained speaker_norm checkpoint the voice signatures (memocmt.speakers) that training
    fits now, from the train + val utterances of `config` (the data it was trained on); the head is
    unchanged and the file is rewritten atomically."""
    from .embed_cache import EmbeddingCache, attach_speaker_stats, embed_manifest, fit_voices
    from ..model import load_checkpoint, read_checkpoint, save_checkpoint

    _, _, extra = read_checkpoint(checkpoint)
    model = load_checkpoint(checkpoint)
    if not model.speaker_norm:
        raise ValueError(f"{checkpoint} is not speaker-normalised (model.speaker_norm); it has no use for voice signatures.")
    manifest, _ = load_training_manifest(config)
    cache = EmbeddingCache(config.cache_dir, model)
    splits = [embed_manifest(cache, manifest.split(name), on_bad_file=config.on_bad_file, progress=False)
              for name in ("train", "val")]
    attach_speaker_stats(splits)
    model.voices = fit_voices(splits)
    if model.voices is None:
        raise ValueError(f"The training data of {checkpoint} has too few known speakers to fit voice signatures.")
    save_checkpoint(model, checkpoint, extra=extra)
    logger.info("Voice signatures (%d dims, threshold %.2f) written into %s", model.voices.matrix.shape[1],
                model.voices.threshold, checkpoint)
    return Path(checkpoint)
