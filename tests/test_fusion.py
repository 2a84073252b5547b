import pytest
import torch

from memocmt.fusion import MODALITIES, POOLINGS, FusionHead, masked_pool, split_pooling


def make_head(pooling="mean", modalities="both", layer_mix=True, residual=False, concat=False):
    torch.manual_seed(0)
    return FusionHead(audio_dim=24, text_dim=16, audio_layers=3, text_layers=2, d_model=32, n_heads=4,
                      n_classes=4, head_dims=(16,), dropout=0.1, pooling=pooling, modalities=modalities,
                      layer_mix=layer_mix, residual=residual, audio_layer_concat=concat).eval()


def random_items(n=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    items = []
    for i in range(n):
        ta, tt = 5 + 4 * i, 3 + 2 * i
        items.append((torch.randn(3, ta, 24, generator=g), torch.randn(2, tt, 16, generator=g)))
    return items


def pad(tensors):
    t_max = max(t.shape[1] for t in tensors)
    out = torch.zeros(len(tensors), tensors[0].shape[0], t_max, tensors[0].shape[2])
    out.fill_(7.0)  # garbage in the padding must not matter
    for i, t in enumerate(tensors):
        out[i, :, : t.shape[1]] = t
    return out, torch.tensor([t.shape[1] for t in tensors])


@pytest.mark.parametrize("residual, concat", [(False, False), (True, False), (True, True)])
@pytest.mark.parametrize("modalities", MODALITIES)
@pytest.mark.parametrize("pooling", [*POOLINGS, "max+stats", "mean+stats"])
def test_padded_batch_equals_items_one_by_one(pooling, modalities, residual, concat):
    head = make_head(pooling, modalities, residual=residual, concat=concat)
    items = random_items()
    audio, a_len = pad([a for a, _ in items])
    text, t_len = pad([t for _, t in items])
    with torch.no_grad():
        batched = head(audio, a_len, text, t_len)
        single = torch.cat([head(a[None], torch.tensor([a.shape[1]]), t[None], torch.tensor([t.shape[1]]))
                            for a, t in items])
    assert batched.shape == (3, 4)
    torch.testing.assert_close(batched, single, atol=1e-5, rtol=1e-5)


def test_pooling_modes_on_known_values():
    x = torch.tensor([[[1.0, -1.0], [3.0, 5.0], [100.0, 100.0]]])
    valid = torch.tensor([[True, True, False]])
    assert masked_pool(x, valid, "cls").tolist() == [[1.0, -1.0]]
    assert masked_pool(x, valid, "mean").tolist() == [[2.0, 2.0]]
    assert masked_pool(x, valid, "max").tolist() == [[3.0, 5.0]]
    assert masked_pool(x, valid, "min").tolist() == [[1.0, -1.0]]
    with pytest.raises(ValueError, match="cls, mean, max, min"):
        masked_pool(x, valid, "median")


def test_ablations_ignore_the_missing_modality():
    audio_only, text_only = make_head(modalities="audio"), make_head(modalities="text")
    (a, t), = random_items(1)
    n_a, n_t = torch.tensor([a.shape[1]]), torch.tensor([t.shape[1]])
    with torch.no_grad():
        assert audio_only(a[None], n_a, None, None).shape == (1, 4)
        assert text_only(None, None, t[None], n_t).shape == (1, 4)
    assert not hasattr(audio_only, "text_branch") and not hasattr(text_only, "audio_branch")


def test_layer_mix_weights_learn_and_fallback_uses_last_layer():
    head = make_head(layer_mix=False)
    states = torch.randn(1, 3, 4, 24)
    assert torch.equal(head.audio_mix(states), states[:, -1])
    mixed = make_head(layer_mix=True)
    assert mixed.audio_mix.weights is not None and mixed.audio_mix.weights.requires_grad


def test_text_queries_attend_to_audio():
    """Changing only the audio changes the text branch's output (cross attention, not self)."""
    head = make_head()
    (a, t), = random_items(1)
    with torch.no_grad():
        text = head.text_in(head.text_mix(t[None]))
        audio = head.audio_in(head.audio_mix(a[None]))
        valid = torch.ones(1, audio.shape[1], dtype=torch.bool)
        out1 = head.text_branch(text, audio, valid)
        out2 = head.text_branch(text, audio + 1.0, valid)
    assert out1.shape == text.shape and not torch.allclose(out1, out2)


def test_bad_options_are_refused():
    with pytest.raises(ValueError, match="pooling"):
        make_head(pooling="avg")
    with pytest.raises(ValueError, match="modalities"):
        make_head(modalities="video")


def test_residual_branch_keeps_the_queries():
    """Without the residual, a branch whose keys are all identical outputs the same row for every
    query; with it, each query's own frame still shows through."""
    plain, residual = make_head(residual=False), make_head(residual=True)
    query = torch.randn(1, 5, 32)
    key = torch.ones(1, 3, 32)
    valid = torch.ones(1, 3, dtype=torch.bool)
    with torch.no_grad():
        out_plain = plain.audio_branch(query, key, valid)
        out_res = residual.audio_branch(query, key, valid)
    assert torch.allclose(out_plain[0, 0], out_plain[0, 1], atol=1e-5)
    assert not torch.allclose(out_res[0, 0], out_res[0, 1], atol=1e-3)


def test_layer_concat_keeps_every_layer_of_each_frame():
    head = make_head(concat=True)
    states = torch.arange(2 * 3 * 4 * 24, dtype=torch.float32).view(2, 3, 4, 24)
    out = head.audio_mix(states)
    assert out.shape == (2, 4, 72)
    assert torch.equal(out[1, 2, 24:48], states[1, 1, 2])


def test_stats_pooling_adds_per_layer_mean_and_std_of_the_valid_frames():
    assert split_pooling("max+stats") == ("max", True) and split_pooling("cls") == ("cls", False)
    with pytest.raises(ValueError, match="max\\+stats"):
        make_head(pooling="median+stats")
    head = make_head(pooling="max+stats")
    assert make_head(pooling="max").audio_stats is None and head.classifier[0].in_features == 2 * 32
    assert make_head(pooling="max+stats", modalities="text").audio_stats is None  # no audio, no audio statistics
    norm = head.audio_stats.norm
    norm.running_mean.zero_()
    norm.running_var.fill_(1.0)
    seen = []
    head.audio_stats.proj.register_forward_hook(lambda m, inputs, out: seen.append(inputs[0]))
    states = torch.randn(1, 3, 6, 24)
    padded = torch.cat([states, torch.full((1, 3, 2, 24), 50.0)], dim=2)  # padding must not count
    with torch.no_grad():
        head.audio_stats(padded, torch.tensor([6]))
    stats = seen[0].view(2, 3, 24) * (1 + norm.eps) ** 0.5  # undo the (unit) batch norm
    torch.testing.assert_close(stats[0], states[0].mean(dim=1), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(stats[1], states[0].std(dim=1, unbiased=False), atol=1e-3, rtol=1e-3)


def test_stats_head_trains_on_a_batch_of_one():
    head = make_head(pooling="max+stats").train()
    (a, t), = random_items(1)
    logits = head(a[None], torch.tensor([a.shape[1]]), t[None], torch.tensor([t.shape[1]]))
    logits.sum().backward()
    assert head.audio_stats.proj.weight.grad is not None


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")  # shape assertions fold to constants when traced
def test_stats_head_exports_to_onnx_with_dynamic_batch_and_lengths(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    head = make_head(pooling="max+stats")
    items = random_items(3)
    audio, a_len = pad([a for a, _ in items])
    text, t_len = pad([t for _, t in items])
    path = tmp_path / "head.onnx"
    torch.onnx.export(head, (audio[:2], a_len[:2], text[:2], t_len[:2]), str(path), opset_version=17, dynamo=False,
                      input_names=["audio", "audio_lengths", "text", "text_lengths"], output_names=["logits"],
                      dynamic_axes={"audio": {0: "b", 2: "ta"}, "audio_lengths": {0: "b"}, "text": {0: "b", 2: "tt"},
                                    "text_lengths": {0: "b"}, "logits": {0: "b"}})
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"audio": audio.numpy(), "audio_lengths": a_len.numpy(), "text": text.numpy(),
                             "text_lengths": t_len.numpy()})[0]
    with torch.no_grad():
        want = head(audio, a_len, text, t_len).numpy()
    assert got.shape == (3, 4)
    assert abs(got - want).max() < 1e-4
