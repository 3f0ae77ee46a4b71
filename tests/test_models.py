import warnings
from pathlib import Path

import open_clip
import pytest
import torch

from galaxalign.models import PRESETS, WeightsNotFoundError, build_model, create_clip, resolve_model_name
from galaxalign.schema import GZ1


def test_small_preset_builds_with_prompt_tokens():
    model, normalization = build_model("small", GZ1, image_size=64)
    assert model.prompt_tokens.shape == (6, 32)
    assert normalization.mean == pytest.approx(open_clip.OPENAI_DATASET_MEAN)
    features = model.encode_image(torch.randn(2, 3, 64, 64))
    assert features.shape == (2, 256)
    assert torch.linalg.norm(features, dim=1).tolist() == pytest.approx([1.0, 1.0], abs=1e-5)


def test_prompts_encode_once_per_label():
    model, _ = build_model("small", GZ1, image_size=64)
    model.eval()
    with torch.no_grad():
        every = model.encode_prompts()
        chosen = model.encode_prompts(torch.tensor([3, 1]))
    assert torch.allclose(chosen, every[[3, 1]], atol=1e-6)


def test_symbol_tower_is_image_tower_until_split():
    model, _ = build_model("small", GZ1, image_size=64)
    model.eval()
    pixels = torch.randn(2, 3, 64, 64)
    assert not model.has_symbol_tower
    with torch.no_grad():
        assert torch.equal(model.encode_symbol(pixels), model.encode_image(pixels))
    model.split_symbol_tower()
    assert model.has_symbol_tower
    assert model.symbol_visual is not model.clip.visual
    with torch.no_grad():
        assert torch.allclose(model.encode_symbol(pixels), model.encode_image(pixels), atol=1e-6)
        projection = list(model.symbol_visual.parameters())[-1]
        projection.add_(torch.randn_like(projection))
        assert not torch.allclose(model.encode_symbol(pixels), model.encode_image(pixels), atol=1e-3)


def test_weights_load_from_local_file(tmp_path: Path):
    source, _ = build_model("small", GZ1, image_size=64, pretrained=None)
    weights = tmp_path / "small.pt"
    torch.save(source.clip.state_dict(), weights)
    loaded, _ = build_model("small", GZ1, image_size=64, pretrained=str(weights))
    for (name, a), (_, b) in zip(
        source.clip.state_dict().items(), loaded.clip.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name


def test_missing_weights_file_names_path(tmp_path: Path):
    missing = tmp_path / "nowhere" / "weights.bin"
    with pytest.raises(WeightsNotFoundError, match="nowhere/weights.bin"):
        create_clip("small", pretrained=str(missing))


def test_unknown_tag_lists_known_tags():
    with pytest.raises(ValueError, match="unknown weights tag 'laion9000'.*openai"):
        create_clip("ViT-B-16", pretrained="laion9000")


def test_unknown_model_names_presets():
    with pytest.raises(ValueError, match="unknown model 'vit-b-99'.*small"):
        resolve_model_name("vit-b-99")


def test_presets_resolve_to_open_clip_models():
    for name, (open_clip_name, tag) in PRESETS.items():
        assert open_clip_name in open_clip.list_models(), name
        if tag is not None:
            assert tag in open_clip.list_pretrained_tags_by_model(open_clip_name), name


def test_openai_tag_turns_on_quick_gelu(monkeypatch: pytest.MonkeyPatch):
    seen = {}

    def fake_create_model(name, **kwargs):
        seen.update(kwargs, name=name)
        raise RuntimeError("Failed to download weights for tag 'openai': no network")

    monkeypatch.setattr(open_clip, "create_model", fake_create_model)
    with pytest.raises(
        WeightsNotFoundError, match="huggingface.co/timm/vit_base_patch16_clip_224.openai"
    ) as error:
        create_clip("vit-b-16")
    assert seen["name"] == "ViT-B-16"
    assert seen["force_quick_gelu"] is True
    assert "local file path" in str(error.value)


def test_local_openai_file_without_quick_gelu_warns(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    weights = tmp_path / "openai-vit-b-16.bin"
    weights.write_bytes(b"")
    monkeypatch.setattr(
        open_clip, "create_model", lambda name, **kwargs: (_ for _ in ()).throw(RuntimeError("stop"))
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(WeightsNotFoundError, match="RuntimeError: stop"):
            create_clip("ViT-B-16", pretrained=str(weights))
    assert any("QuickGELU" in str(w.message) for w in caught)


def test_text_file_as_weights_names_file(tmp_path: Path):
    weights = tmp_path / "notes.txt"
    weights.write_text("hello")
    with pytest.raises(WeightsNotFoundError, match="could not load .*notes.txt as open_clip weights"):
        create_clip("small", pretrained=str(weights))
