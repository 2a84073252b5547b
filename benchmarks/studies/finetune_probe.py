"""Does fine-tuning the top blocks of the Whisper tiny.en encoder help speaker-independent emotion?
No: training the top two blocks with a speaker-standardised probe lifted the hardest
cross-validation group of RAVDESS actors but not the test actors 17-20, the gains stayed within
the run-to-run spread, and it cost about five times the frozen head's CPU time, so the shipped
model keeps its encoders frozen. The measured table is benchmarks/results/finetune_probe.md.

    python benchmarks/studies/finetune_probe.py --ravdess ../shared/data/ravdess-a01-a20 --blocks 0 2 --out runs/finetune_probe.json

A speaker-standardised linear probe (the shipped head's `speaker_norm: mean+std`, then mean and std
over frames of every layer, dropout, one linear layer) is trained with the top K encoder blocks
trainable (K = 0: frozen, the probe alone). The lower layers come from the training embedding
cache; the top K blocks are rerun from the cached states of the layer below them, so no audio is
decoded again. Each batch is every utterance of one training actor, and the speaker statistics
are computed in the graph over that batch, so they follow the blocks as they change.

Scored by UA after the last epoch (no epoch is chosen): 4-fold cross-validation over actors 01-16
(groups of four; the folds the recipe uses) and train 01-16 / test 17-20, 4 classes.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import platform
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))  # run from a checkout without installing

TEST_ACTORS = (17, 18, 19, 20)
CV_GROUPS = ((1, 2, 3, 4), (5, 6, 7, 8), (9, 10, 11, 12), (13, 14, 15, 16))


def speaker_standardised_pooling(states, valid):
    """(N, L, T, D) states of one speaker's N utterances and (N, T) valid frames -> (N, L * 2 * D):
    mean and std over frames of each layer, after standardising every layer and dimension on the
    speaker's statistics (the utterances' means and variances pooled with equal weight)."""
    import torch

    m = valid[:, None, :, None].to(states.dtype)
    n = m.sum(2)
    mean = (states * m).sum(2) / n
    var = (((states - mean[:, :, None]) ** 2) * m).sum(2) / n
    speaker_mean = mean.mean(0)
    speaker_var = (var + (mean - speaker_mean) ** 2).mean(0)
    z = (states - speaker_mean[None, :, None]) / torch.sqrt(speaker_var[None, :, None] + 1e-5)
    z_mean = (z * m).sum(2) / n
    z_std = torch.sqrt((((z - z_mean[:, :, None]) ** 2) * m).sum(2) / n + 1e-5)
    return torch.cat([z_mean, z_std], -1).flatten(1)


class TopBlocksProbe:
    """The top `k` blocks of a WhisperAudioEncoder (copied, trainable) over cached states, then the probe."""

    def __init__(self, encoder, k: int, n_classes: int, dropout: float):
        import torch
        from torch import nn

        self.k, self.n_layers = k, len(encoder.blocks) + 1
        self.blocks = nn.ModuleList(copy.deepcopy(list(encoder.blocks[len(encoder.blocks) - k:])))
        self.ln_post = copy.deepcopy(encoder.ln_post)
        width = encoder.n_state
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(self.n_layers * 2 * width, n_classes))
        self.modules = nn.ModuleList([self.blocks, self.ln_post, self.head])
        for p in list(self.blocks.parameters()) + list(self.ln_post.parameters()):
            p.requires_grad_(k > 0)
        self.torch = torch

    def logits(self, cached: list, lengths: list[int]):
        torch = self.torch
        t = max(lengths)
        x = torch.zeros(len(cached), self.n_layers, t, cached[0].shape[-1])
        for i, (s, n) in enumerate(zip(cached, lengths)):
            x[i, :, :n] = s.float()
        valid = torch.arange(t)[None] < torch.tensor(lengths)[:, None]
        if self.k:
            bias = torch.zeros(len(cached), 1, 1, t).masked_fill(~valid[:, None, None, :], torch.finfo(x.dtype).min)
            h, outs = x[:, self.n_layers - 1 - self.k], []
            for i, block in enumerate(self.blocks):
                h = block(h, bias)
                outs.append(self.ln_post(h) if i == self.k - 1 else h)
            x = torch.cat([x[:, : self.n_layers - self.k], torch.stack(outs, 1)], 1)
        return self.head(speaker_standardised_pooling(x, valid))


def run_one(encoder, states, targets, actors, train_actors, eval_actors, k: int, args) -> list[float]:
    """Train on `train_actors` (one actor per batch) and return the UA on `eval_actors` after every epoch."""
    import torch
    import torch.nn.functional as F

    from memocmt.metrics import classification_report

    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    probe = TopBlocksProbe(encoder, k, args.n_classes, args.dropout)
    by_actor = {a: np.flatnonzero(actors == a).tolist() for a in np.unique(actors)}
    counts = np.bincount(targets[np.isin(actors, train_actors)], minlength=args.n_classes)
    weight = torch.tensor(counts.sum() / (args.n_classes * np.maximum(counts, 1)), dtype=torch.float32)
    groups = [{"params": probe.head.parameters(), "lr": args.head_lr}]
    if k:
        groups.append({"params": list(probe.blocks.parameters()) + list(probe.ln_post.parameters()), "lr": args.lr})
    optimizer = torch.optim.AdamW(groups, weight_decay=0.01)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, args.epochs * len(train_actors))
    params = [p for g in optimizer.param_groups for p in g["params"]]
    history = []
    for _ in range(args.epochs):
        probe.modules.train()
        for a in rng.permutation(list(train_actors)):
            idx = by_actor[a]
            loss = F.cross_entropy(probe.logits([states[i] for i in idx], [states[i].shape[1] for i in idx]),
                                   torch.from_numpy(targets[idx]), weight=weight)
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            scheduler.step()
        probe.modules.eval()
        pred, true = [], []
        with torch.no_grad():
            for a in eval_actors:
                idx = by_actor[a]
                pred.append(probe.logits([states[i] for i in idx], [states[i].shape[1] for i in idx]).argmax(1).numpy())
                true.append(targets[idx])
        history.append(classification_report(np.concatenate(true), np.concatenate(pred), args.labels).ua)
    return history


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Speaker-standardised probe with the top Whisper blocks fine-tuned.")
    parser.add_argument("--ravdess", default=str(REPO.parent / "shared" / "data" / "ravdess-a01-a20"),
                        help="RAVDESS root with Actor_XX folders")
    parser.add_argument("--blocks", type=int, nargs="+", default=[0, 2], help="numbers of top encoder blocks to train")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--lr", type=float, default=5e-5, help="learning rate of the encoder blocks")
    parser.add_argument("--head-lr", type=float, default=1e-3, help="learning rate of the linear probe")
    parser.add_argument("--dropout", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="PyTorch CPU threads (0: its default)")
    parser.add_argument("--cache-dir", default=".cache/embeddings", help="embedding cache shared with training")
    parser.add_argument("--out", default="runs/finetune_probe.json", help="JSON output (a .md table is written next to it)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if not Path(args.ravdess).is_dir():
        parser.error(f"--ravdess {args.ravdess} is not a directory.")
    import torch

    from memocmt.corpora import build_ravdess
    from memocmt.trainer.embed_cache import EmbeddingCache, embed_manifest
    from memocmt.model import MemoCMT
    from memocmt.whisper_encoder import WhisperAudioEncoder

    if args.threads:
        torch.set_num_threads(args.threads)
    manifest = build_ravdess(args.ravdess, classes="4", test_speakers=TEST_ACTORS, val_speakers=(15, 16))
    model = MemoCMT.from_preset("edge", labels=list(manifest.labels), modalities="audio")
    encoder = getattr(model.audio_encoder, "model", None)
    if not isinstance(encoder, WhisperAudioEncoder):
        parser.error("this probe reruns Whisper encoder blocks; the edge preset's audio encoder is not one here.")
    if max(args.blocks) > len(encoder.blocks):
        parser.error(f"--blocks: the encoder has only {len(encoder.blocks)} blocks.")
    embedded = embed_manifest(EmbeddingCache(args.cache_dir, model), manifest, progress=False)
    actors = np.array([int(u.speaker.split("_")[-1]) for u in manifest.items])
    args.labels, args.n_classes = list(manifest.labels), len(manifest.labels)
    targets = np.asarray(embedded.targets)
    evaluations = {f"cv {g[0]:02d}-{g[-1]:02d}": ([a for h in CV_GROUPS if h != g for a in h], g) for g in CV_GROUPS}
    evaluations["test 17-20"] = ([a for g in CV_GROUPS for a in g], TEST_ACTORS)
    results: dict = {}
    started = time.perf_counter()
    for k in args.blocks:
        row = {}
        for name, (train_actors, eval_actors) in evaluations.items():
            history = run_one(encoder, embedded.audio, targets, actors, train_actors, eval_actors, k, args)
            row[name] = {"ua_last": history[-1], "ua_per_epoch": history}
            logging.info("top %d block(s) trained, %s: UA %.1f%% after epoch %d", k, name, 100 * history[-1], args.epochs)
        row["cv_mean_ua"] = float(np.mean([row[n]["ua_last"] for n in evaluations if n.startswith("cv")]))
        results[str(k)] = row
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"results": results, "args": {k: v for k, v in vars(args).items() if k != "labels"},
                               "seconds": round(time.perf_counter() - started, 1), "machine": platform.platform()}, indent=2))
    lines = ["| blocks trained | " + " | ".join(evaluations) + " | CV mean |", "|---|" + "---:|" * (len(evaluations) + 1)]
    for k, row in results.items():
        lines.append(f"| {k} | " + " | ".join(f"{100 * row[n]['ua_last']:.1f}%" for n in evaluations)
                     + f" | {100 * row['cv_mean_ua']:.1f}% |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
