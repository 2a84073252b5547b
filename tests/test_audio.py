import numpy as np
import pytest
import soundfile as sf

from memocmt.audio import SAMPLE_RATE, AudioError, check_audio, load_audio, to_float32


def test_int16_is_scaled_once_to_unit_range():
    pcm = np.array([0, 16384, -32768, 32767], dtype=np.int16)
    out = to_float32(pcm)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [0.0, 0.5, -1.0, 32767 / 32768])
    assert to_float32(out) is out  # float input passes through untouched


def test_real_speech_loads_as_float_mono(speech):
    assert speech.dtype == np.float32 and speech.ndim == 1
    assert 0 < speech.std() < 1
    assert np.abs(speech).max() <= 1.0
    assert 2.0 < speech.size / SAMPLE_RATE < 2.5  # the corpus copy is cut at 2.39 s


def test_stereo_file_at_44k1_is_downmixed_and_resampled(tmp_path):
    t = np.arange(44100) / 44100
    tone = 0.3 * np.sin(2 * np.pi * 440 * t)
    path = tmp_path / "stereo.wav"
    sf.write(path, np.stack([tone, tone], axis=1), 44100, subtype="PCM_16")
    audio = load_audio(path)
    assert audio.ndim == 1
    assert abs(audio.size - SAMPLE_RATE) <= 2
    spectrum = np.abs(np.fft.rfft(audio))
    assert abs(np.argmax(spectrum) * SAMPLE_RATE / audio.size - 440) < 3


@pytest.mark.parametrize(
    "audio, rate, message",
    [
        (np.zeros(16000, np.float32), 44100, "44100 Hz"),
        (np.zeros((16000, 2), np.float32), 16000, "mono"),
        (np.zeros(100, np.float32), 16000, "at least"),
        (np.full(16000, np.nan, np.float32), 16000, "NaN"),
        (np.full(16000, 300.0, np.float32), 16000, "outside [-1, 1]"),
    ],
)
def test_bad_in_memory_audio_gets_one_clear_sentence(audio, rate, message):
    with pytest.raises(AudioError, match=message.replace("[", r"\[").replace("]", r"\]")):
        check_audio(audio, rate)


def test_int16_array_is_accepted_and_scaled():
    pcm = (np.sin(np.arange(16000) / 10) * 20000).astype(np.int16)
    out = check_audio(pcm)
    assert out.dtype == np.float32 and np.abs(out).max() <= 1.0


def test_unreadable_and_missing_files(tmp_path):
    junk = tmp_path / "junk.wav"
    junk.write_bytes(np.random.default_rng(0).bytes(4000))
    with pytest.raises(AudioError, match="junk.wav"):
        load_audio(junk)
    with pytest.raises(AudioError, match="not found"):
        load_audio(tmp_path / "missing.wav")
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros(0, np.float32), 16000)
    with pytest.raises(AudioError, match="no audio"):
        load_audio(empty)


def test_nan_in_float_wav_is_refused(tmp_path):
    path = tmp_path / "nan.wav"
    data = np.zeros(16000, np.float32)
    data[100] = np.nan
    sf.write(path, data, 16000, subtype="FLOAT")
    with pytest.raises(AudioError, match="NaN"):
        load_audio(path)
