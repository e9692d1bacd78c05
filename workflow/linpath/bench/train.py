"""`python -m linpath.bench train`: training steps against the plain loop they replaced.

    python -m linpath.bench train [--images 2048 --epochs 2 --width 16 --device cpu --json out.json]

times training steps on synthetic CIFAR-shaped data, from the same initial
weights: the plain loop training used before the device-resident loader (a
DataLoader over per-image torchvision v2 transforms, fp32; kept below as the
reference), then each addition in turn. It checks that, without augmentation
and in fp32, the per-step losses of both loops agree to 1e-5 (else exit 1).
It then times packs of K seeds (--packs, default 2,4,8; linpath.bench.pack): one
vmapped model of K stacked copies, each seed with its own init and its own
batches, reporting images/s over all seeds, the ratio to the fastest single
run and peak memory, and checks that the first step of a pack of 2 gives the
losses of two single runs on the same batches (no augmentation, fp32) to 1e-5
(else exit 1); later steps drift apart by float rounding and are reported.
"""

from __future__ import annotations

import argparse
import json
import resource

import torch
from torch.utils.data import DataLoader, Dataset

from ..engine import augment, models
from ..engine import data as data_mod
from ..engine.objective import strict_fp32, summed_loss_and_correct
from ..engine.train import StepSettings, train_step
from ..foundations.device import pick_device, synced_time
from ..foundations.hparams import ModelSpec
from ..foundations.io import write_text
from .pack import StackedModel, packed_batches, packed_step


class PerImageDataset(Dataset):
    """Reference: the Dataset training used before (one torchvision v2 call per image)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, transform):
        self.x, self.y, self.transform = x, y, transform

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        xi = self.x[i]
        return (self.transform(xi) if self.transform else xi), self.y[i]


def plain_epoch(model, loader, optimizer, device) -> list[torch.Tensor]:
    """Reference: the training epoch as it stood before (fp32), returning its per-step losses."""
    model.train()
    losses = []
    for xb, yb in loader:
        xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
        loss_sum, _ = summed_loss_and_correct(model(xb), yb, "ce")
        optimizer.zero_grad(set_to_none=True)
        (loss_sum / len(yb)).backward()
        optimizer.step()
        losses.append((loss_sum / len(yb)).detach())
    return losses


def synthetic_cifar(n: int, size: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random uint8 images and labels, normalised as training normalises images."""
    g = torch.Generator().manual_seed(seed)
    raw = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)
    pixels = raw.float().div(255)
    mean, std = pixels.mean(dim=(0, 2, 3), keepdim=True), pixels.std(dim=(0, 2, 3), keepdim=True)
    return (pixels - mean) / std, torch.randint(0, 10, (n,), generator=g)


class TrainBench:
    """The same initial weights, data and optimiser settings for every variant."""

    def __init__(self, args: argparse.Namespace, device: torch.device):
        self.args, self.device = args, device
        self.x, self.y = synthetic_cifar(args.images, args.size)
        self.spec = ModelSpec(arch=args.arch, width=args.width, num_classes=10, in_channels=3, input_size=args.size,
                              maxpool=getattr(args, "maxpool", False))
        with augment.seeded_global_rng(0):
            self.init = models.build(self.spec).state_dict()

    def fresh(self):
        model = models.build(self.spec)
        model.load_state_dict(self.init)
        model.to(self.device)
        return model, torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)

    def seed_init(self, seed: int) -> dict:
        if seed == 0:
            return self.init
        with augment.seeded_global_rng(seed):
            return models.build(self.spec).state_dict()

    def fresh_pack(self, k: int):
        """Seeds 0..k-1 stacked (seed 0 starts where the single runs start), the single runs' optimiser."""
        model = StackedModel(self.spec, [self.seed_init(s) for s in range(k)], self.device)
        return model, torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)

    def pack_loaders(self, level: str, k: int) -> list[data_mod.DeviceLoader]:
        """One loader per seed (train.seed = s), all over the same images."""
        return [data_mod.DeviceLoader(self.x, self.y, self.args.batch_size, s, level, self.device) for s in range(k)]

    def plain_loader(self, level: str, order: list[int] | None = None) -> DataLoader:
        ds = PerImageDataset(self.x, self.y, augment.per_image_pipeline(level, self.args.size))
        if order is not None:
            return DataLoader(ds, batch_size=self.args.batch_size, sampler=order)
        return DataLoader(ds, batch_size=self.args.batch_size, shuffle=True, generator=torch.Generator().manual_seed(0))

    def device_loader(self, level: str) -> data_mod.DeviceLoader:
        return data_mod.DeviceLoader(self.x, self.y, self.args.batch_size, 0, level, self.device)

    def agreement(self, plain_seed: int = 0) -> dict:
        """Per-step losses without augmentation, fp32, TF32 off, deterministic cuDNN, the same
        batches (the plain loop gets the device loader's order, unless `plain_seed` differs)."""
        steps, fast = self.args.agree_steps, self.device_loader("none")
        order = augment.draw_epoch(len(self.y), plain_seed, 1, "none", 0).order.tolist()
        saved = torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = False, True
        try:
            with strict_fp32(self.device):
                model, opt = self.fresh()
                ref = torch.stack(plain_epoch(model, _take(self.plain_loader("none", order), steps), opt, self.device))
                model, opt = self.fresh()
                how = StepSettings(self.device, False, False, False)
                ours = torch.stack([train_step(model, opt, xb, yb, "ce", how) for xb, yb in _take(fast.epoch(1), steps)])
        finally:
            torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = saved
        worst = float((ref.double() - ours.double()).abs().max())
        return {"steps": len(ref), "max_abs_diff": worst, "ok": len(ref) == len(ours) and worst <= 1e-5}

    def pack_agreement(self, k: int = 2) -> dict:
        """A pack of `k` against `k` single runs on the same batches (no augmentation, fp32, TF32 off,
        deterministic cuDNN). The first step's losses, from the same states, must agree to 1e-5: the pack
        computes in grouped kernels what the single runs compute one by one. The parameters after that
        step and the losses of later steps are reported, not checked: a narrow BatchNorm ResNet is
        chaotic at float rounding (a ReLU input within rounding of zero switches its gradient), and two
        single runs that differ only in their convolution kernels (oneDNN on or off) differ as much
        (ResNet-18 width 2, 16×16: 1.7e-5 in the parameters after one step, 7e-4 in the loss after 4)."""
        steps, loaders = self.args.agree_steps, self.pack_loaders("none", k)
        saved = torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = False, True
        how = StepSettings(self.device, False, False, False)
        try:
            with strict_fp32(self.device):
                single_losses, single_first = [], []
                for s, loader in enumerate(loaders):
                    model = models.build(self.spec)
                    model.load_state_dict(self.seed_init(s))
                    model.to(self.device)
                    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
                    losses = []
                    for xb, yb in _take(loader.epoch(1), steps):
                        losses.append(train_step(model, opt, xb, yb, "ce", how))
                        if len(losses) == 1:
                            single_first.append({n: p.detach().clone() for n, p in model.named_parameters()})
                    single_losses.append(torch.stack(losses))
                model, opt = self.fresh_pack(k)
                losses = []
                for xb, yb in _take(packed_batches(loaders, 1), steps):
                    losses.append(packed_step(model, opt, xb, yb, "ce", how))
                    if len(losses) == 1:
                        packed_first = {n: p.detach().clone() for n, p in model.module.named_parameters()}
                packed = torch.stack(losses)
        finally:
            torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = saved
        diffs = (torch.stack(single_losses, 1).double() - packed.double()).abs()
        first_state = max(float((packed_first[n][s] - p).abs().max()) for s, state in enumerate(single_first)
                          for n, p in state.items())
        return {"seeds": k, "steps": len(packed), "first_loss_max_abs_diff": float(diffs[0].max()),
                "first_step_parameters_max_abs_diff": first_state, "drift_max_abs_diff": float(diffs.max()),
                "ok": float(diffs[0].max()) <= 1e-5}

    def time_once(self, run_epoch, compiled: bool, fresh=None) -> tuple[float, float, dict]:
        """Warm-up steps (untimed; compilation happens here), then `epochs` timed epochs."""
        model, opt = (fresh or self.fresh)()
        forward = torch.compile(model) if compiled else model
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        t0 = synced_time(self.device)
        run_epoch(forward, opt, 0, self.args.warmup_steps)
        t1 = synced_time(self.device)
        for epoch in range(1, self.args.epochs + 1):
            run_epoch(forward, opt, epoch, None)
        return synced_time(self.device) - t1, t1 - t0, _peak_memory(self.device)


def _take(batches, steps: int | None):
    for i, batch in enumerate(batches):
        if steps is not None and i >= steps:
            return
        yield batch


def _peak_memory(device: torch.device) -> dict:
    if device.type == "cuda":
        return {"peak_memory_mib": torch.cuda.max_memory_allocated(device) / 2**20, "memory": "cuda max allocated"}
    return {"peak_memory_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "memory": "process peak RSS so far"}


def bench_train(args: argparse.Namespace) -> dict:
    """Time every variant the options ask for; print its lines, write --json, return the figures (with "ok")."""
    device = pick_device(args.device, "--device")
    cuda = device.type == "cuda"
    if args.threads:
        torch.set_num_threads(args.threads)
    args.images = args.images or (16384 if cuda else 1024)
    bench, level = TrainBench(args, device), args.augment

    def plain(forward, opt, epoch, steps):
        plain_epoch(forward, _take(bench.plain_loader(level), steps), opt, device)

    loader = bench.device_loader(level)  # shared by the device-resident variants

    def fast(how):
        def run(forward, opt, epoch, steps):
            for xb, yb in _take(loader.epoch(epoch), steps):
                train_step(forward, opt, xb, yb, "ce", how)
        return run

    fp32, bf16_cl = StepSettings(device, False, False, False), StepSettings(device, True, True, False)
    compile_on = args.compile if args.compile is not None else cuda
    plan = [  # (variant, epoch runner, compiled, why skipped)
        ("plain loop (DataLoader + per-image v2)", plain, False, None),
        ("device-resident batched loader", fast(fp32), False, None),
        ("+ bf16 autocast + channels_last", fast(bf16_cl) if cuda else None, False, None if cuda else "CUDA only"),
        ("+ torch.compile", fast(bf16_cl if cuda else fp32), True,
         None if compile_on else "off (--compile to time it; default off on CPU)"),
    ]
    # Seed packing: K seeds in one vmapped model, each with its own init and batches, in the
    # step settings of the fast single run (bf16 on CUDA; channels_last does not apply to 5-D batches).
    pack_how = StepSettings(device, cuda, False, False)

    def packed(k):
        loaders = bench.pack_loaders(level, k)

        def run(forward, opt, epoch, steps):
            for xb, yb in _take(packed_batches(loaders, epoch), steps):
                packed_step(forward, opt, xb, yb, "ce", pack_how)
        return run

    pack_plan = [(f"pack of {k} seeds (vmap)", packed(k), False, k) for k in args.packs]

    torch.backends.cudnn.benchmark = cuda
    timed = [(name, run, compiled, None) for name, run, compiled, why in plan if why is None] + pack_plan
    runs = {name: [] for name, *_ in timed}
    for _ in range(args.repeats):  # interleaved, so a change in load hits every variant alike
        for name, run, compiled, k in timed:
            runs[name].append(bench.time_once(run, compiled, None if k is None else (lambda k=k: bench.fresh_pack(k))))
    variants = []
    for name, _, compiled, why in plan:
        if why is not None:
            variants.append({"variant": name, "skipped": why})
            continue
        seconds, _, memory = min(runs[name], key=lambda r: r[0])
        v = {"variant": name, "seconds": seconds, "images_per_s": args.images * args.epochs / seconds, **memory}
        v["ratio_to_plain"] = v["images_per_s"] / (variants[0]["images_per_s"] if variants else v["images_per_s"])
        if compiled:
            v["compile_seconds"] = runs[name][0][1]
        variants.append(v)
    singles = [v for v in variants[1:] if "skipped" not in v]
    fastest = max(singles, key=lambda v: v["images_per_s"]) if singles else None
    packing = []
    for name, _, _, k in pack_plan:
        seconds, _, memory = min(runs[name], key=lambda r: r[0])
        rate = k * args.images * args.epochs / seconds
        packing.append({"variant": name, "seeds": k, "seconds": seconds, "images_per_s": rate,
                        "ratio_to_single": rate / fastest["images_per_s"], "single": fastest["variant"], **memory})
    agreement = bench.agreement()
    pack_agreement = bench.pack_agreement() if args.packs else None

    result = {"device": str(device), "threads": torch.get_num_threads(), "arch": args.arch, "width": args.width,
              "images": args.images, "size": args.size, "batch_size": args.batch_size, "epochs": args.epochs,
              "repeats": args.repeats, "augment": level, "variants": variants, "packing": packing,
              "agreement": agreement, "pack_agreement": pack_agreement,
              "ok": agreement["ok"] and (pack_agreement is None or pack_agreement["ok"])}
    print(f"train: {args.arch} width {args.width}, {args.images} synthetic images 3×{args.size}×{args.size}, "
          f"batch {args.batch_size}, {args.epochs} epochs (best of {args.repeats}), augmentation {level}, "
          f"on {device} (threads: {torch.get_num_threads()})")
    for v in variants:
        if "skipped" in v:
            print(f"  {v['variant']:<40} skipped: {v['skipped']}")
            continue
        extra = f"; compile + warm-up {v['compile_seconds']:.1f} s" if "compile_seconds" in v else ""
        print(f"  {v['variant']:<40} {v['images_per_s']:9.1f} images/s {v['ratio_to_plain']:6.2f} × plain  "
              f"peak {v['peak_memory_mib']:.0f} MiB ({v['memory']}){extra}")
    for v in packing:
        print(f"  {v['variant']:<40} {v['images_per_s']:9.1f} images/s (all seeds) {v['ratio_to_single']:6.2f} × "
              f"fastest single  peak {v['peak_memory_mib']:.0f} MiB ({v['memory']})")
    print(f"agreement: max |Δ step loss| over {agreement['steps']} steps (no augmentation, fp32) = "
          f"{agreement['max_abs_diff']:.2e} ({'OK' if agreement['ok'] else 'FAIL'} at 1e-5)")
    if pack_agreement is not None:
        a = pack_agreement
        print(f"pack agreement: a pack of {a['seeds']} vs single runs: first step max |Δ loss| = "
              f"{a['first_loss_max_abs_diff']:.2e} ({'OK' if a['ok'] else 'FAIL'} at 1e-5); not checked (rounding "
              f"grows): |Δ parameter| after it {a['first_step_parameters_max_abs_diff']:.2e}, |Δ loss| over "
              f"{a['steps']} steps {a['drift_max_abs_diff']:.2e}")
    if args.json:
        write_text(json.dumps(result, indent=2) + "\n", args.json)
        print(f"figures -> {args.json}")
    return result


def add_parser(sub) -> None:
    p = sub.add_parser("train", help="training steps: the plain loop vs the device-resident loader and speed settings")
    p.add_argument("--arch", default="resnet18")
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--maxpool", action="store_true", help="keep the ResNet stem's max-pool (model.maxpool, as config/paper.yaml trains)")
    p.add_argument("--images", type=int, default=None, help="synthetic training images (default: 1024 on CPU, 16384 on CUDA)")
    p.add_argument("--size", type=int, default=32, help="image side (CIFAR: 32)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--epochs", type=int, default=2, help="timed epochs per variant")
    p.add_argument("--warmup-steps", type=int, default=2, help="untimed steps before timing (compilation happens here)")
    p.add_argument("--repeats", type=int, default=1, help="time each variant this often, report the best")
    p.add_argument("--agree-steps", type=int, default=20, help="steps compared by the agreement check")
    p.add_argument("--augment", default="standard", choices=["none", "crop", "standard"])
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="also time torch.compile (default: on with CUDA, off on CPU)")
    p.add_argument("--packs", type=lambda v: [int(k) for k in v.split(",") if k], default=[2, 4, 8],
                   help="seeds per pack to time, comma-separated (empty: none)")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--json", default=None, help="also write the figures as JSON here")


    p.set_defaults(run=bench_train)
