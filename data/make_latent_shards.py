"""Precompute latent (and text-embedding) shards from video shards, so the frozen encoders leave training.

Every source frame of every video is encoded by the frozen MoVQ (at ``--resolution``, centre-cropped) and
every caption by the frozen text encoder (padded to ``--max-text-length`` tokens); each sample becomes a
``safetensors`` member (``latents`` (F_src, C, h, w) fp16, ``text`` (L, D) fp16, ``text_mask`` (L,) bool)
beside the caption and the ground truth (plus ``resolution``). ``null_text.safetensors`` (the empty prompt,
for caption dropout) is written next to the shards. Unreadable or caption-less videos are skipped and counted.

    python data/make_latent_shards.py --shards 'data/shards/shapes/shapes-{000000..000003}.tar' \
        --out data/shards/shapes_latents --movq fusionframes/assets/shapes/movq \
        --t2i fusionframes/assets/shapes/t2i --resolution 64
    python data/make_latent_shards.py --shards '<video shards>' --out <dir> --movq <kandinsky3 dir>/movq \
        --t5 <t5 encoder dir> --t5-tokenizer <tokenizer dir> --resolution 512 --max-text-length 128

Train from them with ``data.train_shards='<dir>/<name>-{...}.tar'
data.datamodule.train.null_text_path=<dir>/null_text.safetensors`` and the keyframes sampler.
"""

from __future__ import annotations

import argparse
import collections
import json
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
import safetensors.torch
import torch
import torch.nn.functional as F
import webdataset as wds

from fusionframes.data.samplers import frames_to_tensor
from fusionframes.data.webdataset import LATENTS, resize_square, write_records
from fusionframes.models.latents import LatentCodec
from fusionframes.models.t2i import TextToImageModel
from fusionframes.models.text_encoders import T5TextEncoder
from fusionframes.utils.video_io import decode_frames


@torch.no_grad()
def text_states(encoder: torch.nn.Module, caption: str, length: int) -> dict[str, torch.Tensor]:
    """{"text": (length, D) fp16, "text_mask": (length,) bool} of one caption, zero-padded."""
    hidden, mask = encoder.encode([caption])
    if hidden.shape[1] > length:
        raise ValueError(f"caption {caption!r} has {hidden.shape[1]} tokens, more than --max-text-length={length}.")
    pad = length - hidden.shape[1]
    return {"text": F.pad(hidden[0], (0, 0, 0, pad)).half().cpu(), "text_mask": F.pad(mask[0], (0, pad)).cpu()}


@torch.no_grad()
def records(args: argparse.Namespace, codec: LatentCodec, encoder: torch.nn.Module | None,
            counts: collections.Counter[str]) -> Iterator[dict]:
    device = next(codec.parameters()).device
    for sample in wds.DataPipeline(wds.SimpleShardList(args.shards), wds.tarfile_to_samples()):
        key = sample["__key__"]
        caption = sample.get("txt", b"").decode("utf-8").strip()
        if not caption:
            counts["skipped_without_caption"] += 1
            continue
        try:
            frames = decode_frames(sample.get("mp4", b""))
        except (av.FFmpegError, ValueError) as exn:
            counts["skipped_unreadable_video"] += 1
            print(f"skipping unreadable video {key}: {exn}")
            continue
        if min(frames[0].width, frames[0].height) < args.resolution:
            counts["skipped_smaller_than_resolution"] += 1
            continue
        video = resize_square(frames_to_tensor(np.stack([f.to_ndarray(format="rgb24") for f in frames])),
                              args.resolution)
        latents = torch.cat([codec.encode(chunk.to(device)).half().cpu() for chunk in video.split(args.chunk)])
        tensors = {"latents": latents.contiguous()}
        if encoder is not None:
            tensors.update(text_states(encoder, caption, args.max_text_length))
        try:
            meta = {**json.loads(sample.get("json", b"{}")), "resolution": args.resolution}
        except ValueError:
            counts["skipped_invalid_meta"] += 1
            continue
        counts["written"] += 1
        yield {"__key__": key, LATENTS: safetensors.torch.save(tensors), "txt": caption, "json": json.dumps(meta)}


def text_encoder(args: argparse.Namespace, device: torch.device) -> torch.nn.Module | None:
    if args.t2i:
        return TextToImageModel.from_pretrained(args.t2i, "--t2i").text_encoder.to(device).eval()
    if args.t5:
        return T5TextEncoder(args.t5, args.max_text_length, "--t5", args.t5_tokenizer).to(device)
    return None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shards", required=True, help="video shards (brace pattern) from data/make_shards.py")
    parser.add_argument("--out", required=True, help="output folder for the latent shards")
    parser.add_argument("--prefix", default=None, help="shard name prefix (default: the --out folder's name)")
    parser.add_argument("--movq", required=True, help="the frozen MoVQ (a diffusers VQModel directory)")
    text = parser.add_mutually_exclusive_group()
    text.add_argument("--t2i", help="shapes-world T2I bundle whose text encoder embeds the captions")
    text.add_argument("--t5", help="local T5 encoder directory that embeds the captions")
    parser.add_argument("--t5-tokenizer", default=None, help="its tokenizer directory (default: --t5)")
    parser.add_argument("--resolution", type=int, required=True, help="square frame size before encoding")
    parser.add_argument("--max-text-length", type=int, default=32, help="tokens every text embedding is padded to")
    parser.add_argument("--max-per-shard", type=int, default=64, help="samples per tar shard")
    parser.add_argument("--chunk", type=int, default=32, help="frames per MoVQ encoder call")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    codec = LatentCodec.from_pretrained(args.movq, "--movq").to(device).eval()
    encoder = text_encoder(args, device)
    out = Path(args.out)
    counts: collections.Counter[str] = collections.Counter()
    paths = write_records(records(args, codec, encoder, counts), str(out / f"{args.prefix or out.name}-%06d.tar"),
                          args.max_per_shard)
    if encoder is not None:
        safetensors.torch.save_file(text_states(encoder, "", args.max_text_length), out / "null_text.safetensors")
    print("\n".join(paths))
    print(", ".join(f"{name}: {n}" for name, n in sorted(counts.items())))


if __name__ == "__main__":
    main()
