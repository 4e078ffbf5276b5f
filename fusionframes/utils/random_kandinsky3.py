"""Kandinsky 3 pipeline directories with random weights, for tests and for scale checks without the download.

``random_kandinsky3_dir`` writes what ``TextToImageModel.from_kandinsky3`` reads: ``unet/`` (diffusers
``Kandinsky3UNet``; its default config is the paper's ~3B-parameter UNet), ``text_encoder/`` + ``tokenizer/``
(a transformers T5 encoder with a word-level tokenizer over a given vocabulary) and ``scheduler/``. Nothing is
downloaded; the weights are PyTorch's default initialisation under ``torch.manual_seed(seed)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from diffusers import DDPMScheduler, Kandinsky3UNet

#: diffusers ``VQModel`` kwargs of Kandinsky 3's MoVQ (KandinskyVideo's image_movq: z_channels 4, ch 256, ch_mult
#: [1, 2, 2, 4], 2 residual blocks, attention at the lowest resolution, 8x downsampling; a 161M-parameter decoder).
KANDINSKY_MOVQ: dict[str, Any] = dict(
    block_out_channels=(256, 512, 512, 1024), layers_per_block=2, latent_channels=4, vq_embed_dim=4,
    num_vq_embeddings=16384, norm_type="spatial",
    down_block_types=("DownEncoderBlock2D",) * 3 + ("AttnDownEncoderBlock2D",),
    up_block_types=("AttnUpDecoderBlock2D",) + ("UpDecoderBlock2D",) * 3,
)

#: ``Kandinsky3UNet`` kwargs of the smallest one found to build (two levels; layers_per_block=1 breaks its up
#: blocks), with 16-wide text; for tests and CPU smoke runs of the benchmarks.
TINY_KANDINSKY3_UNET: dict[str, Any] = dict(
    in_channels=4, time_embedding_dim=32, groups=4, attention_head_dim=8, layers_per_block=2,
    block_out_channels=(16, 32), cross_attention_dim=16, encoder_hid_dim=16)


def word_level_t5(words: list[str], **config: Any):
    """(random transformers ``T5EncoderModel`` of ``config`` (T5Config keys), word-level tokenizer over
    ``words`` with <pad>=0, </s>=1, <unk>=2 appended by a post-processor)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast, T5Config, T5EncoderModel

    vocab = {w: i for i, w in enumerate(["<pad>", "</s>", "<unk>", *words])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", eos_token="</s>",
                                        unk_token="<unk>")
    return T5EncoderModel(T5Config(vocab_size=len(vocab), **config)), tokenizer


def random_kandinsky3_dir(root: str | Path, words: list[str], unet: dict[str, Any] | None = None,
                          t5: dict[str, Any] | None = None, seed: int = 0, device: str = "cpu",
                          dtype: torch.dtype = torch.float32) -> Path:
    """Write a random Kandinsky 3 directory under ``root``; ``unet`` (Kandinsky3UNet kwargs; none: the paper's
    size) and ``t5`` (T5Config kwargs; its d_model must equal the UNet's encoder_hid_dim). ``device`` and
    ``dtype``: where the weights are initialised and how they are stored (the paper size initialises in
    seconds on a GPU, in minutes on a CPU)."""
    root = Path(root)
    torch.manual_seed(seed)
    with torch.device(device):
        model = Kandinsky3UNet(**(unet or {}))
    model.to(dtype).save_pretrained(root / "unet")
    encoder, tokenizer = word_level_t5(words, **(t5 or {"d_model": model.config.encoder_hid_dim}))
    encoder.to(dtype).save_pretrained(root / "text_encoder")
    tokenizer.save_pretrained(root / "tokenizer")
    DDPMScheduler(beta_schedule="squaredcos_cap_v2").save_pretrained(root / "scheduler")
    return root
