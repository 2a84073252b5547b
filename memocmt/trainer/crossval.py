"""Model selection by speaker-disjoint cross-validation over the train + val speakers.

A small corpus has too few validation speakers to pick an epoch count on (RAVDESS: 2 actors
moved the shipped model's test UA by several points). `cross_validate` trains one head per
fold on cached embeddings for every candidate config and scores UA after each epoch;
`train_with_cv` then retrains the best (candidate, epoch count) on all train + val speakers and
fits its temperature (memocmt.calibration) on the folds' held-out predictions at that epoch count,
scored both with all of each held-out speaker's utterances and as live sessions hear them.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from ..manifest import Manifest
from .parallel import cpu_workers, fork_available, map_forked
from ..perturb import Acoustic, parse_perturbations, perturbed_speaker
from .train import (
    CachedDataset,
    TrainConfig,
    class_weight,
    collate_cached,
    epoch_sampler,
    load_training_manifest,
    make_optimizer,
    merge_config,
    perturbed_copies,
    predict,
    resolve_device,
    seed_everything,
    train,
    train_epoch,
)

if TYPE_CHECKING:
    from ..config import MemoCMTConfig
    from .embed_cache import EmbeddedSplit

logger = logging.getLogger("memocmt")


def candidate_configs(config: TrainConfig) -> dict[str, TrainConfig]:
    """The config itself ("base") and each of its `cv_candidates` applied to it."""
    base = dataclasses.replace(config, cv_candidates={})
    out = {"base": base}
    for name, changes in config.cv_candidates.items():
        out[name] = TrainConfig.from_dict(merge_config(asdict(base), changes))
    return out


def speaker_folds(manifest: Manifest, k: int, corpora: list[str] = ()) -> list[list[tuple[str, str]]]:
    """k speaker-disjoint folds: each corpus's sorted speakers (of `corpora`, all if empty) cut into k contiguous
    blocks, fold i the union of every corpus's block i.

    Contiguous blocks of sorted ids keep RAVDESS's alternating male/female actors mixed in every fold; cutting
    each corpus on its own gives every fold speakers of every corpus (when it has k of them), so no fold trains
    on one corpus's speakers alone.
    """
    speakers = sorted({u.speaker_key() for u in manifest.items if not corpora or u.corpus in corpora})
    if len(speakers) < k:
        raise ValueError(f"{k}-fold cross-validation needs at least {k} speakers; the train and val splits have "
                         f"{len(speakers)}{' in corpora ' + ', '.join(corpora) if corpora else ''}.")
    by_corpus: dict[str, list[tuple[str, str]]] = {}
    for key in speakers:
        by_corpus.setdefault(key[0], []).append(key)
    folds: list[list[tuple[str, str]]] = [[] for _ in range(k)]
    for group in by_corpus.values():
        bounds = [round(i * len(group) / k) for i in range(k + 1)]
        for i in range(k):
            folds[i] += group[bounds[i]:bounds[i + 1]]
    if any(not fold for fold in folds):  # a corpus with fewer than k speakers left a fold empty: cut them all as one
        bounds = [round(i * len(speakers) / k) for i in range(k + 1)]
        folds = [speakers[bounds[i]:bounds[i + 1]] for i in range(k)]
    return folds


def cross_validate(config: TrainConfig, run_dir: str | os.PathLike, *, folds: int | None = None,
                   progress: bool = True) -> dict:
    """Speaker-disjoint k-fold CV of the config and its `cv_candidates` over the train + val speakers.

    Each fold trains a fresh head (cached embeddings, frozen encoders) on the other folds' speakers
    plus every train/val utterance of corpora outside `cv_corpora`, and scores UA on its own
    speakers after every epoch. The (candidate, epoch) with the best mean UA over folds is chosen.
    Writes cv.json (every fold's UA per epoch) and cv.md (the table) to `run_dir`; the test split
    is never loaded.
    """
    from ..config import preset
    from .embed_cache import EmbeddedSplit, EmbeddingCache, attach_speaker_stats, embed_manifest
    from ..model import MemoCMT

    k = folds or config.cv_folds
    if k < 2:
        raise ValueError("Cross-validation needs at least 2 folds (cv_folds or --cv-folds).")
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    manifest, problems = load_training_manifest(config)
    labels = list(manifest.labels)
    pool = Manifest.from_items(manifest.split("train").items + manifest.split("val").items, manifest.labels)
    fold_speakers = speaker_folds(pool, k, config.cv_corpora)
    fold_of = {spk: i for i, group in enumerate(fold_speakers) for spk in group}
    if config.threads > 0:
        torch.set_num_threads(config.threads)
    device = resolve_device(config.device)
    seed_everything(config.seed)
    model = MemoCMT(preset(config.preset, labels=labels, **config.model))
    if not (model.config.freeze_audio and model.config.freeze_text):
        raise ValueError("Cross-validation trains heads on cached embeddings; it needs frozen encoders.")
    cache = EmbeddingCache(config.cache_dir, model)
    embedded = embed_manifest(cache, pool, on_bad_file=config.on_bad_file, progress=progress, desc="embed train+val")
    candidates = candidate_configs(config)
    if len({tuple(c.perturb_corpora) for c in candidates.values()}) > 1:
        raise ValueError("cv_candidates may change `perturb` but not `perturb_corpora`.")
    union = sorted({spec for c in candidates.values() for spec in c.perturb})  # every candidate's copies, encoded once
    copies = dict(zip(parse_perturbations(union), perturbed_copies(cache, pool, dataclasses.replace(config, perturb=union),
                                                                    progress=progress)))
    attach_speaker_stats([embedded, *copies.values()])  # used by candidates with model.speaker_norm, ignored by the others
    items, j = [], 0  # the utterances embed_manifest kept, in order (it skips only unusable audio)
    for u in pool.items:
        if j < len(embedded.ids) and embedded.ids[j] == (u.id or str(u.audio)):
            items.append(u)
            j += 1
    item_fold = [fold_of.get(u.speaker_key(), -1) for u in items]  # -1: always trains (outside cv_corpora)
    copy_fold = {}  # a perturbed copy is in the fold of the speaker it was made from
    for p, c in copies.items():
        source = {perturbed_speaker(spk, p): spk for spk in fold_of}
        copy_fold[p] = [fold_of.get(source.get(spk), -1) for spk in c.speakers]
    dims = {name: getattr(model.config, name) for name in
            ("audio_hidden_size", "audio_num_layers", "text_hidden_size", "text_num_layers")}

    table: dict[str, dict] = {}
    started = time.perf_counter()
    for name, cand in candidates.items():
        head_config = preset(cand.preset, labels=labels, **cand.model).replace(**dims)
        if (head_config.audio_encoder, head_config.text_encoder) != (model.config.audio_encoder, model.config.text_encoder):
            raise ValueError(f"cv_candidates[{name!r}] changes an encoder; candidates share one embedding cache.")
        used = parse_perturbations(cand.perturb)
        joint = EmbeddedSplit.concat([embedded, *(copies[p] for p in used)])
        joint_fold = item_fold + [f for p in used for f in copy_fold[p]]
        rooms = [p for p in used if isinstance(p, Acoustic)]  # held-out speakers in noisy rooms: scored, for calibration
        jobs = [_FoldJob(name, fold, k, " ".join(s for _, s in fold_speakers[fold]), cand, head_config, labels,
                         joint, [i for i, f in enumerate(joint_fold) if f != fold], embedded,
                         [i for i, f in enumerate(item_fold) if f == fold],  # real utterances only
                         bool(used), device, progress,
                         EmbeddedSplit.concat([copies[p].subset([i for i, f in enumerate(copy_fold[p]) if f == fold])
                                               for p in rooms]) if rooms else None) for fold in range(k)]
        outcomes = _run_folds(jobs, fold_workers(config, device, k))
        scores, losses, sizes, held = ([o[i] for o in outcomes] for i in range(4))
        _save_held_out(run_dir / f"cv_oof-{name}.npz", held, [j.held_idx for j in jobs])
        mean = np.mean(np.array(scores), axis=0)
        best = int(np.argmax(mean))
        table[name] = {"overrides": config.cv_candidates.get(name, {}), "epochs": cand.epochs, "fold_ua": scores,
                       "mean_ua": mean.tolist(), "best_epoch": best + 1, "best_mean_ua": float(mean[best]),
                       "best_fold_ua": [f[best] for f in scores], "last_mean_ua": float(mean[-1]),
                       "fold_loss": losses, "fold_train_utterances": sizes}
    chosen = max(table, key=lambda n: table[n]["best_mean_ua"])  # first listed wins a tie ("base" first)
    result = {"folds": [[spk for _, spk in group] for group in fold_speakers], "cv_corpora": config.cv_corpora,
              "n_utterances": len(items), "n_always_train": item_fold.count(-1), "candidates": table,
              "chosen": {"candidate": chosen, "epochs": table[chosen]["best_epoch"],
                         "mean_ua": table[chosen]["best_mean_ua"]},
              "seconds": round(time.perf_counter() - started, 1), "skipped": [str(p) for p in problems + embedded.skipped]}
    (run_dir / "cv.json").write_text(json.dumps(result, indent=2))
    (run_dir / "cv.md").write_text(cv_markdown(result))
    logger.info("CV chose %s with %d epochs (mean UA %.4f)", chosen, table[chosen]["best_epoch"], table[chosen]["best_mean_ua"])
    return result


@dataclasses.dataclass
class _FoldJob:
    """One candidate's training on one fold: everything `_train_fold` needs."""

    candidate: str
    fold: int
    k: int
    held_speakers: str
    cand: TrainConfig
    head_config: MemoCMTConfig
    labels: list[str]
    joint: EmbeddedSplit  # real utterances and the candidate's perturbed copies
    train_idx: list[int]
    embedded: EmbeddedSplit  # the real utterances
    held_idx: list[int]
    versions: bool
    device: torch.device
    progress: bool
    held_noisy: EmbeddedSplit | None = None  # the held-out speakers' copies in noisy rooms (Acoustic perturbations)


def _train_fold(job: _FoldJob) -> tuple[list[float], list[float], int, dict]:
    """UA and mean cross-entropy on the held-out speakers after every epoch, the number of training
    utterances (copies included), and the held-out log-probabilities after every epoch (`held_out_logprobs`)."""
    from tqdm.auto import tqdm

    from .embed_cache import prior_stats
    from ..metrics import classification_report
    from ..model import build_head

    cand, device = job.cand, job.device
    train_split = job.joint.subset(job.train_idx)
    prior = prior_stats(train_split) if job.head_config.speaker_norm != "none" else None
    train_set = CachedDataset(train_split, (cand.feature_noise, cand.frame_drop, cand.crop_frames),
                              cand.speaker_subsample, prior, versions=job.versions)
    held = job.embedded.subset(job.held_idx)
    held_set = CachedDataset(held)
    live_set = CachedDataset(session_stats_split(held, None if prior is None else prior.numpy(), seed=job.fold)) \
        if job.head_config.speaker_norm != "none" else None
    seed_everything(cand.seed)
    head = build_head(job.head_config)
    if head.speaker_norm:
        head.speaker_prior.copy_(prior)
    head = head.to(device)
    params = [p for p in head.parameters() if p.requires_grad]
    optimizer, scheduler = make_optimizer(cand, params)
    weight = class_weight(train_set.epoch_targets, len(job.labels), device) if cand.class_weights else None
    loss_fn = nn.CrossEntropyLoss(weight=weight)
    held_loader = torch.utils.data.DataLoader(held_set, batch_size=cand.batch_size, collate_fn=collate_cached)
    n_epochs = cand.stop_epoch or cand.epochs
    live_loader = torch.utils.data.DataLoader(live_set, batch_size=cand.batch_size, collate_fn=collate_cached) \
        if live_set is not None else None
    noisy_loader = None
    if job.held_noisy is not None and len(job.held_noisy):  # each noisy voice as a live session has it
        noisy = session_stats_split(job.held_noisy, None if prior is None else prior.numpy(), seed=job.fold) \
            if job.head_config.speaker_norm != "none" else job.held_noisy
        noisy_loader = torch.utils.data.DataLoader(CachedDataset(noisy), batch_size=cand.batch_size, collate_fn=collate_cached)
    fold_ua, fold_loss, logprobs = [], [], {"all": [], "session": [], "noisy": []}
    for epoch in tqdm(range(1, n_epochs + 1), desc=f"cv {job.candidate} fold {job.fold + 1}/{job.k}",
                      disable=not job.progress, leave=False):
        loader = torch.utils.data.DataLoader(train_set, batch_size=cand.batch_size, collate_fn=collate_cached,
                                             sampler=epoch_sampler(train_set, cand.seed, epoch, cand.balance, cand.epoch_size))
        train_epoch(head, loader, loss_fn, optimizer, params, cand.grad_clip, device)
        scheduler.step()
        y, prob = predict(head, held_loader, device)
        fold_ua.append(classification_report(y, prob.argmax(1), job.labels).ua)
        fold_loss.append(float(-np.mean(np.log(np.maximum(prob[np.arange(len(y)), y], 1e-12)))))
        logprobs["all"].append(np.log(np.maximum(prob, 1e-30)).astype(np.float32))
        if live_loader is not None:
            logprobs["session"].append(np.log(np.maximum(predict(head, live_loader, device)[1], 1e-30)).astype(np.float32))
        if noisy_loader is not None:
            noisy_y, noisy_prob = predict(head, noisy_loader, device)
            logprobs["noisy"].append(np.log(np.maximum(noisy_prob, 1e-30)).astype(np.float32))
    logger.info("CV %s fold %d/%d (%s): UA %.4f after epoch %d, best %.4f at epoch %d", job.candidate, job.fold + 1,
                job.k, job.held_speakers, fold_ua[-1], n_epochs, max(fold_ua), int(np.argmax(fold_ua)) + 1)
    held_out = {"targets": np.asarray(y), **{k: np.stack(v) for k, v in logprobs.items() if v}}
    if noisy_loader is not None:
        held_out["noisy_targets"] = np.asarray(noisy_y)
    return fold_ua, fold_loss, len(job.train_idx), held_out


def session_stats_split(split: EmbeddedSplit, prior: np.ndarray | None, seed: int = 0) -> EmbeddedSplit:
    """`split` with each utterance's speaker statistics as a live session has them: each speaker's
    utterances in a random order, each classified with the statistics of those heard so far (this
    one included, the last ADAPT_WINDOW) and the prior (memocmt.speaker_norm.SpeakerAdapter)."""
    from ..speaker_norm import ADAPT_WINDOW, SpeakerAdapter

    rng = np.random.default_rng(seed)
    by_speaker: dict = {}
    for i, speaker in enumerate(split.speakers):
        by_speaker.setdefault(speaker if speaker is not None else ("utterance", i), []).append(i)
    stats: list = [None] * len(split)
    for index in by_speaker.values():
        adapter = SpeakerAdapter(ADAPT_WINDOW, prior)
        for i in rng.permutation(index):
            stats[int(i)] = torch.from_numpy(adapter.update(split.utterance_stats[int(i)])[0])
    return dataclasses.replace(split, speaker_stats=stats)


def _save_held_out(path: Path, held: list[dict], index: list[list[int]]) -> None:
    """Every fold's held-out log-probabilities after every epoch, as one file (`held_out_logprobs` reads it):
    `all` and `session` (E, N, C) over the folds' utterances, `targets` (N,), `fold` (N,); with noisy
    rooms among the perturbations also `noisy` (E, M, C) over the held-out speakers' noisy copies and
    `noisy_targets` (M,)."""
    arrays = {"targets": np.concatenate([h["targets"] for h in held]),
              "fold": np.concatenate([np.full(len(h["targets"]), f) for f, h in enumerate(held)]),
              "index": np.concatenate([np.asarray(i) for i in index])}
    for key in ("all", "session", "noisy"):
        if all(key in h for h in held):
            arrays[key] = np.concatenate([h[key] for h in held], axis=1)
    if "noisy" in arrays:
        arrays["noisy_targets"] = np.concatenate([h["noisy_targets"] for h in held])
    np.savez_compressed(path, **arrays)


def held_out_logprobs(run_dir: str | os.PathLike, epochs: int, candidate: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The cross-validation's held-out log-probabilities after `epochs` epochs (every fold's speakers, each
    once with all of its utterances' statistics, once as a live session, and in the noisy rooms of the
    training perturbations as live sessions), and their class ids: what a temperature is fitted on
    (memocmt.calibration), so that confidence holds in the rooms people use it in, not only in the
    studio. `candidate`: default the chosen one."""
    run_dir = Path(run_dir)
    if candidate is None:
        candidate = json.loads((run_dir / "cv.json").read_text())["chosen"]["candidate"]
    path = run_dir / f"cv_oof-{candidate}.npz"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; run the cross-validation again with this version of memocmt.")
    data = np.load(path)
    if not 1 <= epochs <= data["all"].shape[0]:
        raise ValueError(f"The cross-validation in {run_dir} ran {data['all'].shape[0]} epochs, not {epochs}.")
    parts = [(data["all"][epochs - 1], data["targets"])]
    if "session" in data:
        parts.append((data["session"][epochs - 1], data["targets"]))
    if "noisy" in data:
        parts.append((data["noisy"][epochs - 1], data["noisy_targets"]))
    return np.concatenate([z for z, _ in parts]), np.concatenate([t for _, t in parts])


def calibrate_run(run_dir: str | os.PathLike, epochs: int, candidate: str | None = None,
                  checkpoint: str | os.PathLike | None = None) -> dict:
    """Fit the temperature of `checkpoint` (default <run_dir>/best.safetensors) on the cross-validation's
    held-out predictions after `epochs` epochs, never on test speakers, and store it in the checkpoint.
    Returns (and writes to <run_dir>/calibration.json) the temperature and the held-out ECE before and after."""
    from ..calibration import calibration_report, fit_temperature, softmax
    from ..model import update_checkpoint_config

    run_dir = Path(run_dir)
    logprobs, targets = held_out_logprobs(run_dir, epochs, candidate)
    temperature = fit_temperature(logprobs, targets)
    before, after = (calibration_report(softmax(logprobs, t), targets) for t in (1.0, temperature))
    result = {"temperature": temperature, "epochs": epochs, "held_out_predictions": int(len(targets)),
              "held_out_ece_before": before.ece, "held_out_ece_after": after.ece,
              "held_out_nll_before": before.nll, "held_out_nll_after": after.nll}
    update_checkpoint_config(checkpoint or run_dir / "best.safetensors", temperature=temperature,
                             extra={"calibration": result})
    (run_dir / "calibration.json").write_text(json.dumps(result, indent=2))
    logger.info("Temperature %.3f fitted on %d held-out CV predictions: ECE %.3f -> %.3f", temperature, len(targets),
                before.ece, after.ece)
    return result


def fold_workers(config: TrainConfig, device: torch.device, k: int) -> int:
    """How many folds train at once: `cv_workers`, or (0) as many as the CPU cores allow at `threads` each.
    On a GPU, one at a time: the folds would share one device, and CUDA does not survive a fork
    (memocmt.trainer.parallel also falls back for that)."""
    if device.type != "cpu":
        return 1
    return min(config.cv_workers, k) if config.cv_workers else cpu_workers(k, config.threads or torch.get_num_threads())


def _run_folds(jobs: list[_FoldJob], workers: int) -> list[tuple[list[float], list[float], int, dict]]:
    """`_train_fold` on every job, in order, `workers` at a time (memocmt.trainer.parallel)."""
    if workers > 1 and fork_available():
        logger.info("CV: %d folds, %d at a time in worker processes", len(jobs), workers)
        jobs = [dataclasses.replace(job, progress=False) for job in jobs]  # bars from several processes garble
    return map_forked(_train_fold, jobs, workers, torch.get_num_threads())


def cv_markdown(result: dict) -> str:
    k = len(result["folds"])
    lines = [f"# {k}-fold speaker cross-validation (train + val speakers)", "",
             "Folds: " + "; ".join(f"{i + 1}: {', '.join(f)}" for i, f in enumerate(result["folds"])), "",
             "| candidate | overrides | best epoch | mean UA at best epoch | per-fold UA at best epoch | mean UA at last epoch |",
             "|---|---|---|---|---|---|"]
    for name, row in result["candidates"].items():
        mark = " (chosen)" if name == result["chosen"]["candidate"] else ""
        folds = " / ".join(f"{100 * u:.1f}" for u in row["best_fold_ua"])
        lines.append(f"| {name}{mark} | `{json.dumps(row['overrides'])}` | {row['best_epoch']} of {row['epochs']} | "
                     f"{100 * row['best_mean_ua']:.1f}% | {folds} | {100 * row['last_mean_ua']:.1f}% |")
    return "\n".join(lines) + "\n"


def final_config(config: TrainConfig, cv: dict) -> TrainConfig:
    """`config` with the CV-chosen candidate's overrides, trained on train + val for the chosen number of
    epochs of its schedule (`cv` as cross_validate returns it; another config can follow the same choice)."""
    overrides = cv["candidates"][cv["chosen"]["candidate"]]["overrides"]
    chosen = TrainConfig.from_dict(merge_config(asdict(dataclasses.replace(config, cv_candidates={})), overrides))
    return dataclasses.replace(chosen, stop_epoch=cv["chosen"]["epochs"], train_on_val=True, cv_folds=0)


def train_with_cv(config: TrainConfig, run_dir: str | os.PathLike | None = None, *, folds: int | None = None,
                  progress: bool = True) -> Path:
    """cross_validate, then train the chosen candidate on all train + val speakers into the same run folder."""
    run_dir = Path(run_dir or Path(config.out_dir) / (config.run_name or time.strftime("run-%Y%m%d-%H%M%S")))
    cv = cross_validate(config, run_dir, folds=folds, progress=progress)
    trained = train(final_config(config, cv), run_dir, progress=progress)
    calibrate_run(run_dir, cv["chosen"]["epochs"])
    return trained
