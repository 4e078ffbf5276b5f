"""Text encoders. Common interface: ``encode(prompts) -> (hidden (B, L, D), mask bool (B, L))`` and ``dim``.

- ``ShapesTextEncoder``: a small trainable transformer over a closed word vocabulary (the shapes world).
- ``T5TextEncoder``: a frozen transformers T5 encoder loaded from a local directory (real scale).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from transformers import AutoTokenizer, T5EncoderModel

from fusionframes.data.shapes import BACKGROUNDS, COLOURS, MOTIONS, SHAPES, SPEEDS

PUNCTUATION = ",.!?"
CAPTION_TEMPLATE_WORDS = ("a", "moving", "on", "background")


def shapes_vocabulary() -> list[str]:
    """Every word a shapes-world caption can use, sorted.

    Captions read "a red circle moving left quickly on a blue background" or "a green square growing slowly
    on a black background"; the words come from ``fusionframes.data.shapes`` plus the template words.
    """
    return sorted({*CAPTION_TEMPLATE_WORDS, *SHAPES, *COLOURS, *BACKGROUNDS, *MOTIONS, *SPEEDS})


def split_words(text: str) -> list[str]:
    """Lower-case, strip the punctuation ``,.!?`` and split on whitespace."""
    return text.lower().translate(str.maketrans("", "", PUNCTUATION)).split()


def as_prompt_list(prompts: str | Sequence[str]) -> list[str]:
    """A single prompt or a sequence of prompts -> list of prompts."""
    return [prompts] if isinstance(prompts, str) else list(prompts)


class WordTokenizer:
    """Closed-vocabulary word tokenizer; ids 0 = <pad>, 1 = <bos>, then the sorted words.

    Every sequence starts with <bos>, so the empty prompt "" (the null caption of classifier-free
    guidance) encodes to a single valid token.
    """

    PAD, BOS = "<pad>", "<bos>"

    def __init__(self, words: Iterable[str]) -> None:
        self.words = sorted(set(words) - {self.PAD, self.BOS})
        for word in self.words:
            if split_words(word) != [word]:
                raise ValueError(f"vocabulary entry {word!r} is not a single lower-case word without {PUNCTUATION!r}.")
        self.tokens = [self.PAD, self.BOS, *self.words]
        self.ids = {token: i for i, token in enumerate(self.tokens)}

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def pad_id(self) -> int:
        return self.ids[self.PAD]

    @classmethod
    def from_texts(cls, texts: Iterable[str]) -> WordTokenizer:
        """Vocabulary of every word in ``texts``."""
        return cls(word for text in texts for word in split_words(text))

    def encode(self, prompts: str | Sequence[str], max_length: int | None = None) -> tuple[Tensor, Tensor]:
        """prompts -> (ids long (B, L), mask bool (B, L)), <bos> first, padded with <pad> to the longest prompt."""
        prompts = as_prompt_list(prompts)
        sequences = [[self.ids[self.BOS], *(self._id(w, p) for w in split_words(p))] for p in prompts]
        length = max((len(s) for s in sequences), default=1)
        if max_length is not None and length > max_length:
            longest = prompts[max(range(len(sequences)), key=lambda i: len(sequences[i]))]
            raise ValueError(f"prompt {longest!r} has {length} tokens with <bos>, more than max_length={max_length}.")
        ids = torch.full((len(sequences), length), self.pad_id, dtype=torch.long)
        for row, seq in enumerate(sequences):
            ids[row, : len(seq)] = torch.tensor(seq)
        return ids, ids != self.pad_id

    def _id(self, word: str, prompt: str) -> int:
        if word not in self.ids or word in (self.PAD, self.BOS):
            raise ValueError(
                f"unknown word {word!r} in prompt {prompt!r}; the vocabulary is: {', '.join(self.words)}."
            )
        return self.ids[word]

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps({"words": self.words}, indent=1))

    @classmethod
    def load(cls, path: str | Path) -> WordTokenizer:
        if not Path(path).is_file():
            raise FileNotFoundError(f"tokenizer file {str(path)!r} does not exist.")
        return cls(json.loads(Path(path).read_text())["words"])


class ShapesTextEncoder(nn.Module):
    """Word tokenizer -> token embedding + learned positions -> pre-norm transformer -> LayerNorm: (B, L, dim)."""

    WEIGHTS, CONFIG = "model.safetensors", "config.json"

    def __init__(self, vocab: list[str], dim: int = 128, depth: int = 2, heads: int = 4, max_length: int = 32) -> None:
        super().__init__()
        self.tokenizer = WordTokenizer(vocab)
        self.config = dict(vocab=self.tokenizer.words, dim=dim, depth=depth, heads=heads, max_length=max_length)
        self.max_length = max_length
        self.token_embedding = nn.Embedding(len(self.tokenizer), dim)
        self.position_embedding = nn.Parameter(torch.randn(max_length, dim) * 0.02)
        layer = nn.TransformerEncoderLayer(
            dim, heads, dim_feedforward=4 * dim, dropout=0.0, activation="gelu", batch_first=True, norm_first=True
        )
        self.transformer = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)

    @property
    def dim(self) -> int:
        return self.token_embedding.embedding_dim

    def forward(self, ids: Tensor, mask: Tensor) -> Tensor:
        """ids long (B, L), mask bool (B, L) (True = token, L <= max_length) -> hidden (B, L, dim)."""
        h = self.token_embedding(ids) + self.position_embedding[: ids.shape[1]]
        return self.norm(self.transformer(h, src_key_padding_mask=~mask))

    def encode(self, prompts: str | Sequence[str]) -> tuple[Tensor, Tensor]:
        """prompts -> (hidden (B, L, dim), mask bool (B, L)) on the module's device."""
        ids, mask = self.tokenizer.encode(prompts, max_length=self.max_length)
        device = self.token_embedding.weight.device
        ids, mask = ids.to(device), mask.to(device)
        return self(ids, mask), mask

    def save_pretrained(self, directory: str | Path) -> None:
        """Write ``model.safetensors`` and ``config.json`` (vocabulary included) to ``directory``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, directory / self.WEIGHTS)
        (directory / self.CONFIG).write_text(json.dumps(self.config, indent=1))

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> ShapesTextEncoder:
        """Load a directory written by ``save_pretrained`` (on CPU)."""
        directory = Path(directory)
        for name in (cls.CONFIG, cls.WEIGHTS):
            if not (directory / name).is_file():
                raise FileNotFoundError(f"text encoder directory {str(directory)!r} has no {name}.")
        model = cls(**json.loads((directory / cls.CONFIG).read_text()))
        model.load_state_dict(load_file(directory / cls.WEIGHTS))
        return model


class T5TextEncoder(nn.Module):
    """Frozen transformers ``T5EncoderModel`` + tokenizer from a local directory (never the hub).

    Stays in eval mode (``train()`` is a no-op) with ``requires_grad=False``. ``tokenizer_path`` defaults to
    ``path``; diffusers pipeline directories keep it apart (``text_encoder/`` and ``tokenizer/``).
    """

    def __init__(self, path: str, max_length: int = 128, config_key: str = "model.text_encoder.path",
                 tokenizer_path: str | None = None) -> None:
        super().__init__()
        if not Path(path).is_dir():
            raise FileNotFoundError(
                f"{config_key}={str(path)!r} is not a directory; set it to a local T5 encoder directory "
                "(config.json, weights and tokenizer files)."
            )
        self.max_length = max_length
        self.tokenizer = AutoTokenizer.from_pretrained(tokenizer_path or path, local_files_only=True)
        self.model = T5EncoderModel.from_pretrained(path, local_files_only=True)
        self.model.requires_grad_(False)
        self.train(False)

    def train(self, mode: bool = True) -> T5TextEncoder:
        """Frozen: always eval mode."""
        return super().train(False)

    @property
    def dim(self) -> int:
        return self.model.config.d_model

    @torch.no_grad()
    def encode(self, prompts: str | Sequence[str]) -> tuple[Tensor, Tensor]:
        """prompts -> (last_hidden_state (B, L, dim), mask bool (B, L)) on the model's device; L <= max_length."""
        prompts = as_prompt_list(prompts)
        tokens = self.tokenizer(prompts, padding="longest", return_tensors="pt").to(self.model.device)
        if tokens.input_ids.shape[1] > self.max_length:
            raise ValueError(
                f"a prompt has {tokens.input_ids.shape[1]} tokens, more than max_length={self.max_length}; shorten it."
            )
        hidden = self.model(input_ids=tokens.input_ids, attention_mask=tokens.attention_mask).last_hidden_state
        return hidden, tokens.attention_mask.bool()
