"""benchmarks/studies/finetune_probe.py: the speaker-standardised pooling and the rerun of the top encoder blocks."""

from __future__ import annotations

import torch

from benchmarks.studies.finetune_probe import TopBlocksProbe, speaker_standardised_pooling
from memocmt.whisper_encoder import WhisperAudioEncoder


def test_pooling_standardises_on_the_speakers_statistics():
    torch.manual_seed(0)
    states = 3.0 + 2.0 * torch.randn(4, 2, 6, 5)  # 4 utterances of one speaker, 2 layers, 6 frames, 5 dims
    valid = torch.ones(4, 6, dtype=torch.bool)
    pooled = speaker_standardised_pooling(states, valid).view(4, 2, 2, 5)  # (utterance, layer, mean|std, dim)
    torch.testing.assert_close(pooled[:, :, 0].mean(0), torch.zeros(2, 5), atol=1e-5, rtol=0)  # centred on the speaker
    z = (states - states.mean((0, 2))[None, :, None]) / states.std((0, 2), unbiased=False)[None, :, None]
    torch.testing.assert_close(pooled[:, :, 1], z.std(2, unbiased=False), atol=1e-3, rtol=1e-3)
    # padding frames do not count
    padded = torch.cat([states, torch.full((4, 2, 3, 5), 100.0)], dim=2)
    torch.testing.assert_close(speaker_standardised_pooling(padded, torch.arange(9)[None] < 6).view(4, 2, 2, 5), pooled,
                               atol=1e-4, rtol=1e-4)


def test_rerunning_the_top_blocks_reproduces_the_encoder_before_training():
    torch.manual_seed(0)
    encoder = WhisperAudioEncoder(n_mels=8, n_ctx=32, n_state=16, n_head=2, n_layer=3).eval()
    mel = torch.randn(2, 8, 20)
    with torch.no_grad():
        states, lengths = encoder(mel, torch.tensor([20, 14]))
    cached = [states[i, :, : lengths[i]] for i in range(2)]
    frozen = TopBlocksProbe(encoder, 0, n_classes=3, dropout=0.0)
    for k in (1, 3):
        tuned = TopBlocksProbe(encoder, k, n_classes=3, dropout=0.0)
        tuned.head.load_state_dict(frozen.head.state_dict())
        tuned.modules.eval()
        with torch.no_grad():
            torch.testing.assert_close(tuned.logits(cached, lengths.tolist()), frozen.logits(cached, lengths.tolist()),
                                       atol=1e-5, rtol=1e-5)
        assert all(p.requires_grad for p in tuned.blocks.parameters())
        assert sum(1 for _ in tuned.blocks) == k
