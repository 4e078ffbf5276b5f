"""Write a Kandinsky 3 pipeline directory with random weights at the paper's size (or smaller), offline.

For scale and distributed checks without the real weights: unet/ is diffusers' ``Kandinsky3UNet`` with its
default (the paper's, ~3B-parameter) config; text_encoder/ + tokenizer/ a one-layer random T5 encoder of width
4096 (the UNet's encoder_hid_dim) with a word-level tokenizer over the shapes-world vocabulary; scheduler/.
Pair it with the shapes MoVQ (4 latent channels like Kandinsky 3's MoVQ):

    python scripts/make_random_kandinsky3.py /tmp/k3 --device cuda --dtype bf16
    python train.py experiment=paper/keyframes_blocks data=shapes data.resolution=256 model.unet.path=/tmp/k3 \
        model.movq_path=fusionframes/assets/shapes/movq
"""

from __future__ import annotations

import argparse

import torch

from fusionframes.models.text_encoders import shapes_vocabulary
from fusionframes.utils.random_kandinsky3 import random_kandinsky3_dir

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out")
    parser.add_argument("--device", default="cpu", help="where to initialise the weights (cuda is much faster)")
    parser.add_argument("--dtype", choices=list(DTYPES), default="fp32", help="how to store them")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    t5 = dict(d_model=4096, d_ff=4096, num_layers=1, num_heads=32, d_kv=128)
    root = random_kandinsky3_dir(args.out, shapes_vocabulary(), t5=t5, seed=args.seed, device=args.device,
                                 dtype=DTYPES[args.dtype])
    print(f"wrote {root}")


if __name__ == "__main__":
    main()
