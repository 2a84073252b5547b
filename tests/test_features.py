import numpy as np
import pytest

from memocmt.features import FeatureSpec, extract_features, log_mel_spectrogram, mel_filterbank, pad_batch


def test_filterbank_matches_whisper_reference():
    fw = pytest.importorskip("faster_whisper.feature_extractor")
    ref = fw.FeatureExtractor().mel_filters
    np.testing.assert_allclose(mel_filterbank(), ref, atol=1e-6)


def test_log_mel_matches_faster_whisper_on_real_speech(speech):
    fw = pytest.importorskip("faster_whisper.feature_extractor")
    ours = log_mel_spectrogram(speech)
    ref = fw.FeatureExtractor()(speech, padding=0)
    assert ours.shape == (80, speech.size // 160)
    np.testing.assert_allclose(ours, ref[:, : ours.shape[1]], atol=1e-4)


def test_waveform_normalisation():
    audio = (np.random.default_rng(0).standard_normal(8000) * 0.1 + 0.05).astype(np.float32)
    out = extract_features(audio, FeatureSpec("waveform", normalize=True))
    assert abs(out.mean()) < 1e-4 and abs(out.std() - 1) < 1e-3
    assert extract_features(audio, FeatureSpec("waveform")) is not None


def test_pad_batch_keeps_lengths():
    batch, lengths = pad_batch([np.ones((80, 5)), np.ones((80, 3))])
    assert batch.shape == (2, 80, 5) and list(lengths) == [5, 3]
    assert batch[1, :, 3:].sum() == 0


def test_the_mel_projection_runs_on_one_blas_thread(monkeypatch):
    # more BLAS threads leave OpenBLAS workers spinning beside the ONNX encoder that runs next
    threadpoolctl = pytest.importorskip("threadpoolctl")
    from memocmt import features

    blas = threadpoolctl.ThreadpoolController().select(user_api="blas")
    if not blas.info():
        pytest.skip("NumPy is not linked to a BLAS threadpoolctl can see")
    seen = []
    real = features._cached_filterbank

    def spy(*args):
        seen.append(max(lib["num_threads"] for lib in threadpoolctl.ThreadpoolController().select(user_api="blas").info()))
        return real(*args)

    monkeypatch.setattr(features, "_cached_filterbank", spy)
    spec = FeatureSpec("log_mel")
    audio = (0.1 * np.sin(np.arange(16000) / 7.0)).astype(np.float32)
    limited = extract_features(audio, spec)
    assert seen == [1]
    # threadpoolctl missing: the same numbers up to float32 rounding (a multi-threaded sgemm may sum in another order)
    monkeypatch.setattr(features, "_blas_threads", lambda: None)
    np.testing.assert_allclose(extract_features(audio, spec), limited, rtol=1e-5, atol=1e-6)
