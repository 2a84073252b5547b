"""Protocol memocmt.v1: start options, control messages, PCM decoding of any framing."""

from __future__ import annotations

import json

import numpy as np
import pytest

from memocmt.audio import SAMPLE_RATE
from memocmt.serve import protocol
from memocmt.serve.protocol import ProtocolError, StartOptions
from memocmt.serve.session import PcmDecoder


def test_start_defaults_and_round_trip():
    options = StartOptions.parse({"type": "start"})
    assert (options.sample_rate, options.format, options.channels, options.speakers) == (16000, "pcm_s16le", 1, "auto")
    assert options.hindsight
    assert options.language is None  # the server's --language
    again = StartOptions.parse(StartOptions(44100, "pcm_f32le", 2, "one", "full", "wait", False, "pl").to_message())
    assert again == StartOptions(44100, "pcm_f32le", 2, "one", "full", "wait", False, "pl")
    assert "language" not in StartOptions().to_message()


@pytest.mark.parametrize("field,value,words", [
    ("sample_rate", 100, "sample_rate"), ("sample_rate", "16000", "sample_rate"), ("sample_rate", True, "sample_rate"),
    ("format", "mp3", "format"), ("channels", 0, "channels"), ("speakers", "many", "speakers"),
    ("asr_context", "long", "asr_context"), ("overflow", "block", "overflow"), ("volume", 3, "Unknown field"),
    ("hindsight", "yes", "hindsight"), ("language", 5, "language"), ("language", "", "language"),
])
def test_start_rejects_bad_fields_in_one_sentence(field, value, words):
    with pytest.raises(ProtocolError, match=words) as info:
        StartOptions.parse({"type": "start", field: value})
    assert str(info.value).endswith(".") and "\n" not in str(info.value)


@pytest.mark.parametrize("text,words", [
    ("hello", "JSON"), ("[1, 2]", "object"), ('{"kind": "start"}', "type"), ('{"type": "pause"}', "Unknown message"),
    ("x" * 5000, "at most"),
])
def test_bad_control_messages(text, words):
    with pytest.raises(ProtocolError, match=words):
        protocol.parse_message(text)


def test_server_messages():
    assert protocol.parse_message('{"type": "stop"}') == {"type": "stop"}
    ready = protocol.ready("abc", ["a", "b"], {"model": "m"})
    assert ready["type"] == "ready" and ready["protocol"] == "memocmt.v1" and ready["labels"] == ["a", "b"]
    assert json.loads(json.dumps(protocol.busy(3)))["type"] == "busy"
    assert protocol.CLOSE_TRY_AGAIN == 1013


def test_pcm_split_anywhere_decodes_the_same():
    rng = np.random.default_rng(0)
    samples = (rng.uniform(-0.5, 0.5, 4001)).astype(np.float32)
    data = (samples * 32768).astype("<i2").tobytes()
    whole = PcmDecoder(StartOptions()).decode(data)
    decoder = PcmDecoder(StartOptions())
    cuts = [0, 1, 2, 7, 1000, 1001, 5555, len(data)]  # odd cuts split samples
    parts = [decoder.decode(data[a:b]) for a, b in zip(cuts, cuts[1:])]
    assert np.array_equal(np.concatenate(parts), whole)
    assert np.allclose(whole, samples, atol=1 / 32768)


def test_pcm_stereo_float_and_resampling():
    t = np.arange(48000) / 48000
    tone = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    stereo = np.stack([tone, tone], axis=1).astype("<f4")
    stereo[10, 0] = np.nan  # corrupt samples are cleaned, not passed on
    decoder = PcmDecoder(StartOptions(sample_rate=48000, format="pcm_f32le", channels=2))
    out = np.concatenate([decoder.decode(stereo.tobytes()[:99999]), decoder.decode(stereo.tobytes()[99999:]), decoder.flush()])
    assert np.isfinite(out).all()
    assert abs(len(out) - SAMPLE_RATE) <= 2
    assert 0.3 < np.sqrt(np.mean(out[1000:-1000] ** 2)) < 0.4  # 0.5 / sqrt(2)
