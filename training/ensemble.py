"""Merge head checkpoints of one recipe (`training.heads`, different `--seed`s, the same frozen backbone) into one
network whose logits are the mean of theirs: the members' necks side by side (one wider neck, the same
Linear + ReLU per member), each head reading all of them with its weights divided by the number of members. Exact,
so a bundle runs it like any network (one backbone pass, Grad-CAM included); its embedding is the members' necks
concatenated (256 x members wide), so the morphs and typicality read every member.

Body-type heads only: a modernity network's per-year head and temperature and a gate's refitted view head are
chosen per network on validation.

  python -m training.ensemble runs/body_s0/bodytype.pt runs/body_s1/bodytype.pt runs/body_s2/bodytype.pt \\
      --out runs/body_ensemble/bodytype.pt
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from training.features import car_splits, training_body_types
from training.heads import car_metrics
from training.teacher import saved_carnet

# Arguments that may differ between members: what made them different runs of one recipe.
MEMBER_ARGS = ("seed", "out")
PER_NETWORK = ("year_head", "view_head")


def merged_state(states: Sequence[dict[str, torch.Tensor]], heads: Sequence[str]) -> dict[str, torch.Tensor]:
    """One state dict whose neck is the members' necks stacked and whose heads average the members' logits."""
    first, n = states[0], len(states)
    state = {key: value for key, value in first.items() if key.startswith("backbone.")}
    state["neck.0.weight"] = torch.cat([s["neck.0.weight"] for s in states])
    state["neck.0.bias"] = torch.cat([s["neck.0.bias"] for s in states])
    for head in heads:
        state[f"heads.{head}.weight"] = torch.cat([s[f"heads.{head}.weight"] for s in states], dim=1) / n
        state[f"heads.{head}.bias"] = torch.stack([s[f"heads.{head}.bias"] for s in states]).mean(0)
    return state


def check_members(checkpoints: Sequence[dict[str, Any]], paths: Sequence[Path]) -> None:
    """ValueError unless the checkpoints are runs of one recipe on one frozen backbone, with a neck, and carry no
    per-network head."""
    first = checkpoints[0]
    recipe = {k: v for k, v in first["args"].items() if k not in MEMBER_ARGS}
    if len(checkpoints) < 2:
        raise ValueError("an ensemble needs at least two checkpoints")
    for path, checkpoint in zip(paths, checkpoints, strict=True):
        if "members" in checkpoint:
            raise ValueError(f"{path}: already an ensemble; merge its members' checkpoints instead")
        if any(key in checkpoint for key in PER_NETWORK):
            raise ValueError(f"{path}: a modernity or gate checkpoint (its per-year or view head is chosen per "
                             "network); ensembles are of body-type heads")  # fmt: skip
        if not checkpoint["args"].get("frozen_backbone") or not int(checkpoint["args"].get("neck", 0)):
            raise ValueError(f"{path}: not heads with a neck on a frozen backbone (training.heads)")
        differing = sorted(k for k in recipe.keys() | checkpoint["args"].keys()
                           if k not in MEMBER_ARGS and checkpoint["args"].get(k) != recipe.get(k))  # fmt: skip
        if differing or checkpoint["heads"] != first["heads"]:
            raise ValueError(f"{path}: another recipe than {paths[0]} ({', '.join(differing) or 'heads'} differ)")
        backbone = {k: v for k, v in checkpoint["model"].items() if k.startswith("backbone.")}
        if any(not torch.equal(v, first["model"][k]) for k, v in backbone.items()):
            raise ValueError(f"{path}: another backbone than {paths[0]}")
    if len({c["args"]["seed"] for c in checkpoints}) < len(checkpoints):
        raise ValueError("the checkpoints share a seed: the same run twice")


def merge_checkpoints(paths: Sequence[Path]) -> dict[str, Any]:
    """The merged checkpoint, in `training.heads`' shape: `members` keeps each run's path, epoch and history."""
    checkpoints = [torch.load(path, map_location="cpu", weights_only=True) for path in paths]
    check_members(checkpoints, paths)
    first = checkpoints[0]
    neck = sum(int(c["args"]["neck"]) for c in checkpoints)
    members = {f"seed_{c['args']['seed']}": {"checkpoint": str(path), "epoch": c["epoch"], "history": c["history"]}
               for path, c in zip(paths, checkpoints, strict=True)}  # fmt: skip
    args = first["args"] | {"neck": neck, "seed": [c["args"]["seed"] for c in checkpoints]}
    return {"model": merged_state([c["model"] for c in checkpoints], list(first["heads"])), "epoch": None,
            "history": [], "members": members, "args": args, "heads": first["heads"]}  # fmt: skip


def validation_scores(checkpoint: dict[str, Any], table: pd.DataFrame) -> dict[str, float]:
    """The merged network's body-type metrics on the validation cars of its cache (the crops as cached)."""
    args = checkpoint["args"]
    cars = car_splits(table, Path(args["teacher"]), training_body_types(table))
    model = saved_carnet(checkpoint["heads"], args)
    model.load_state_dict(checkpoint["model"])
    return car_metrics("body_type")(model, cars["val"])


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoints", nargs="+", type=Path, help="training.heads bodytype.pt files of one recipe")
    p.add_argument("--out", type=Path, required=True, help="the merged checkpoint (for training.build --bodytype)")
    p.add_argument("--table", type=Path, default=Path("runs/table.parquet"), help="for the validation metrics")
    args = p.parse_args(argv)
    try:
        merged = merge_checkpoints(args.checkpoints)
    except ValueError as error:
        p.error(str(error))
    merged["args"]["out"] = str(args.out.parent)
    merged["validation"] = validation_scores(merged, pd.read_parquet(args.table))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(merged, args.out)
    members = {name: record["history"][record["epoch"]] for name, record in merged["members"].items()}
    print(json.dumps({"ensemble": merged["validation"], "members' kept epochs": members}, indent=1), flush=True)


if __name__ == "__main__":
    main()
