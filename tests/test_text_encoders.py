from __future__ import annotations

import socket

import pytest
import torch

from fusionframes.data.shapes import ShapesWorld
from fusionframes.models.text_encoders import (
    ShapesTextEncoder,
    T5TextEncoder,
    WordTokenizer,
    shapes_vocabulary,
)
from tests.conftest import tiny_t5

CAPTIONS = ["a red circle moving left quickly on a blue background", "A green square growing slowly!", ""]


def test_tokenizer_encodes_and_round_trips(tmp_path):
    tok = WordTokenizer.from_texts(CAPTIONS)
    ids, mask = tok.encode(CAPTIONS)
    assert ids.dtype == torch.long and mask.dtype == torch.bool and ids.shape == mask.shape == (3, 11)
    assert (ids[:, 0] == tok.ids["<bos>"]).all()
    assert mask.sum(1).tolist() == [11, 6, 1]  # <bos> + words; "" is <bos> alone
    assert (ids[~mask] == tok.pad_id).all()
    assert [tok.tokens[i] for i in ids[1, 1:6]] == "a green square growing slowly".split()
    path = tmp_path / "tokenizer.json"
    tok.save(path)
    loaded = WordTokenizer.load(path)
    assert loaded.tokens == tok.tokens and torch.equal(loaded.encode(CAPTIONS)[0], ids)
    empty_ids, empty_mask = tok.encode([""])
    assert empty_ids.tolist() == [[tok.ids["<bos>"]]] and empty_mask.all()


def test_tokenizer_errors():
    tok = WordTokenizer(["a", "red", "circle"])
    with pytest.raises(ValueError, match=r"unknown word 'purple'.*a, circle, red"):
        tok.encode(["a purple circle"])
    with pytest.raises(ValueError, match="max_length=3"):
        tok.encode(["a red circle"], max_length=3)
    with pytest.raises(ValueError, match="'Red'"):
        WordTokenizer(["Red"])


def test_shapes_vocabulary_covers_world_captions():
    vocab = shapes_vocabulary()
    assert {"a", "moving", "on", "background", "circle", "left", "quickly", "growing"} <= set(vocab)
    world = ShapesWorld(resolution=16, num_frames=8)
    captions = [world.scene(i).caption() for i in range(50)]
    _, mask = WordTokenizer(vocab).encode(captions)
    assert mask.sum(1).tolist() == [len(c.split()) + 1 for c in captions]


def test_shapes_text_encoder_shapes_mask_and_save_load(tmp_path):
    torch.manual_seed(0)
    encoder = ShapesTextEncoder(shapes_vocabulary(), dim=32, depth=1, heads=2, max_length=16).eval()
    prompts = ["a red circle moving left quickly on a blue background", ""]
    hidden, mask = encoder.encode(prompts)
    assert hidden.shape == (2, 11, 32) and encoder.dim == 32
    assert mask.tolist()[1] == [True] + [False] * 10
    assert torch.isfinite(hidden).all() and hidden.requires_grad
    # padding does not change the real tokens' states
    alone, _ = encoder.encode(prompts[1:])
    torch.testing.assert_close(hidden[1, :1], alone[0])
    encoder.save_pretrained(tmp_path / "enc")
    loaded = ShapesTextEncoder.from_pretrained(tmp_path / "enc").eval()
    assert loaded.config == encoder.config
    assert torch.equal(loaded.encode(prompts)[0], hidden)
    with pytest.raises(ValueError, match="max_length=16"):
        encoder.encode([" ".join(["a"] * 16)])
    with pytest.raises(FileNotFoundError, match="missing"):
        ShapesTextEncoder.from_pretrained(tmp_path / "missing")


def test_t5_missing_path_names_config_key(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"model\.text_encoder\.path=.*nowhere"):
        T5TextEncoder(str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match=r"stage\.t5="):
        T5TextEncoder(str(tmp_path / "nowhere"), config_key="stage.t5")


@pytest.fixture
def t5_dir(tmp_path):
    encoder, tokenizer = tiny_t5(["a", "red", "circle", "moving", "left"])
    encoder.save_pretrained(tmp_path / "t5")
    tokenizer.save_pretrained(tmp_path / "t5")
    return tmp_path / "t5"


def test_t5_loads_and_encodes_offline(t5_dir, monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("T5TextEncoder tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    encoder = T5TextEncoder(str(t5_dir), max_length=8)
    assert encoder.dim == 16 and not encoder.model.training
    assert not any(p.requires_grad for p in encoder.parameters())
    encoder.train()
    assert not encoder.model.training
    hidden, mask = encoder.encode(["a red circle moving left", "", "a circle"])
    assert hidden.shape == (3, 6, 16) and mask.dtype == torch.bool
    assert mask.sum(1).tolist() == [6, 1, 3]  # words + </s>
    assert torch.isfinite(hidden).all() and not hidden.requires_grad
    with pytest.raises(ValueError, match="max_length=8"):
        encoder.encode([" ".join(["a"] * 8)])
