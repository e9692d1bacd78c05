"""Helpers of benchmarks/gpu_check.sh: what the machine is, CIFAR-10 files without a download, the
paper's run settings for `linpath train`, and the one summary table of every stage's outputs.

    python benchmarks/gpu_check.py env OUT.json
    python benchmarks/gpu_check.py cifar-files ROOT --train 50000 --test 10000
    python benchmarks/gpu_check.py paper-run OUT.yaml --root ROOT --epochs 2 --device cuda [--bench-args FILE]
    python benchmarks/gpu_check.py summary DIR

The summary reads DIR/stages.tsv (one line per stage: name, status, exit status, seconds, log file),
the JSON figures of `python -m linpath.bench`, pytest's JUnit XML and the files of the `linpath train`
run; a stage whose outputs are missing is shown with its status and log, never with figures.
"""

from __future__ import annotations

import argparse
import json
import pickle
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# --- env -----------------------------------------------------------------------------------------


def machine(out: Path) -> dict:
    """torch, CUDA and the GPU as torch and nvidia-smi see them."""
    import torch

    info = {"python": sys.version.split()[0], "torch": torch.__version__, "torch_cuda_build": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
            "cuda_available": torch.cuda.is_available(), "cpu_threads": torch.get_num_threads()}
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1),
                    gpu_capability=f"{props.major}.{props.minor}", gpu_count=torch.cuda.device_count())
    try:
        query = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                               capture_output=True, text=True, timeout=30)
        info["nvidia_smi"] = query.stdout.strip() or query.stderr.strip()
    except (OSError, subprocess.TimeoutExpired) as err:
        info["nvidia_smi"] = f"not available ({type(err).__name__})"
    out.write_text(json.dumps(info, indent=2) + "\n")
    print(json.dumps(info, indent=2))
    return info


# --- CIFAR-10 in its on-disk format ----------------------------------------------------------------

CIFAR_LABELS = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def write_cifar(root: Path, n_train: int, n_test: int, record: Path | None = None, seed: int = 0) -> None:
    """cifar-10-batches-py/ as the official archive lays it out (five training batches, a test batch,
    batches.meta; Python pickles of uint8 rows of 3072 = 3×32×32 values), filled with random images. No
    checksum matches the official one: runs read it with data.verify_checksums false."""
    import numpy as np

    if n_train % 5:
        raise SystemExit(f"--train must be a multiple of 5 (five training batches), got {n_train}")
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    batches = [(f"data_batch_{i}", n_train // 5, f"training batch {i} of 5") for i in range(1, 6)]
    for name, n, label in [*batches, ("test_batch", n_test, "testing batch 1 of 1")]:
        entry = {"batch_label": label, "labels": rng.integers(0, 10, size=n).tolist(),
                 "data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
                 "filenames": [f"synthetic_{name}_{j}.png" for j in range(n)]}
        with open(folder / name, "wb") as f:
            pickle.dump(entry, f, protocol=2)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"num_cases_per_batch": n_train // 5, "label_names": CIFAR_LABELS, "num_vis": 3072}, f, protocol=2)
    if record is not None:
        record.parent.mkdir(parents=True, exist_ok=True)
        record.write_text(json.dumps({"train_images": n_train, "test_images": n_test}) + "\n")
    print(f"wrote {n_train} + {n_test} random 3×32×32 images to {folder}")


# --- the paper's run settings ----------------------------------------------------------------------


def paper_run(out: Path, root: Path, epochs: int, device: str, width: int | None, bench_args: Path | None = None,
              setting: str = "base") -> dict:
    """The settings the workflow gives seed 0 of `setting` under config/config.yaml + config/paper.yaml,
    with the data read from `root` (unchecked copies), `epochs` epochs and `device`. `bench_args`: also
    write the options that make `python -m linpath.bench train` time that model and recipe."""
    sys.path.insert(0, str(REPO / "workflow"))
    from linpath.study.config import load_config
    from linpath.study.plan import Plan

    plan = Plan(load_config([str(REPO / "config" / "config.yaml"), str(REPO / "config" / "paper.yaml")]))
    settings = plan.resolve(plan.run_of(setting, 0))
    settings["name"] = f"paper-{setting}-{epochs}-epochs"
    settings["data"].update(root=str(root), verify_checksums=False, download=False)
    settings["train"].update(epochs=epochs, device=device)
    for key, value in list(settings["train"].items()):  # epoch lists of the full run: keep what falls in
        if (key.endswith("_epochs") or key == "milestones") and isinstance(value, list):
            settings["train"][key] = [e for e in value if e <= epochs]
    if width:
        settings["model"]["width"] = width
    import yaml

    out.write_text(yaml.safe_dump(settings, sort_keys=False))
    print(yaml.safe_dump(settings, sort_keys=False))
    if bench_args is not None:
        model, train = settings["model"], settings["train"]
        options = (f"--arch {model['arch']} --width {model['width']} --batch-size {train['batch_size']} "
                   f"--augment {settings['data']['augment']}{' --maxpool' if model.get('maxpool') else ''}")
        bench_args.write_text(options + "\n")
        print(f"python -m linpath.bench train {options}")
    return settings


# --- the summary -----------------------------------------------------------------------------------

COLUMNS = ["stage", "status", "wall s", "measure", "images/s", "s/epoch", "note"]


def read_stages(folder: Path) -> dict[str, dict]:
    stages = {}
    path = folder / "stages.tsv"
    if path.is_file():
        for line in path.read_text().splitlines():
            name, status, rc, seconds, log = line.split("\t")
            stages[name] = {"status": status, "rc": rc, "seconds": float(seconds), "log": log}
    return stages


def _json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _fmt(value, digits: int = 1) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


def env_rows(folder: Path) -> list[list]:
    info = _json(folder / "env.json")
    if not info:
        return [["", "", "", "machine", "", "", "env.json missing"]]
    gpu = info.get("gpu") or "no CUDA device"
    return [["", "", "", f"{gpu}", "", "",
             f"torch {info['torch']} (CUDA {info['torch_cuda_build']}, cuDNN {info['cudnn']}); nvidia-smi: "
             f"{info.get('nvidia_smi', '')}"]]


def test_rows(folder: Path) -> tuple[list[list], list[str]]:
    xml = folder / "cuda_tests.xml"
    if not xml.is_file():
        return [["", "", "", "cuda tests", "", "", "no JUnit XML"]], []
    counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    failed, skip_reasons = [], set()
    for case in ET.parse(xml).getroot().iter("testcase"):
        counts["tests"] += 1
        for kind in ("failure", "error", "skipped"):
            found = case.find(kind)
            if found is not None:
                counts["failures" if kind == "failure" else "errors" if kind == "error" else "skipped"] += 1
                if kind == "skipped":
                    skip_reasons.add((found.get("message") or "").strip())
                else:
                    failed.append(f"{case.get('name')}: {(found.get('message') or '').splitlines()[0][:160]}")
    passed = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    note = f"{passed} passed, {counts['failures']} failed, {counts['errors']} errors, {counts['skipped']} skipped"
    if skip_reasons:
        note += f" (skipped: {'; '.join(sorted(skip_reasons))[:200]})"
    return [["", "", "", "pytest -m cuda (CUDA vs CPU)", "", "", note]], failed


def cli_rows(folder: Path) -> list[list]:
    run = folder / "cli_run"
    summary_path = run / "summary.yaml"
    log = folder / "cli-train.log"
    if not summary_path.is_file():
        return [["", "", "", "linpath train (paper recipe)", "", "", "no summary.yaml"]]
    import yaml

    summary = yaml.safe_load(summary_path.read_text())
    settings = yaml.safe_load((run / "run.yaml").read_text())
    found = re.search(r"(\d+) epochs in ([\d.]+)s", log.read_text()) if log.is_file() else None
    epochs, seconds = (int(found[1]), float(found[2])) if found else (summary.get("epochs"), None)
    images = (_json(run / "data.json") or {}).get("train_images")
    per_epoch = seconds / epochs if seconds and epochs else None
    note = (f"{settings['model']['arch']} width {settings['model']['width']}, batch {settings['train']['batch_size']}, "
            f"{images} images, on {summary.get('step_device')} {summary.get('step_precision')}"
            f"{' channels_last' if summary.get('step_channels_last') else ''}; "
            f"train loss {summary.get('train_loss', float('nan')):.3f}; linpath's timer includes "
            f"data loading and {epochs + 1 if epochs else '?'} evaluations")
    rate = images * epochs / seconds if seconds and images and epochs else None
    return [["", "", "", f"linpath train, {epochs} epochs", _fmt(rate), _fmt(per_epoch, 2), note]]


def train_rows(folder: Path, name: str) -> list[list]:
    figures = _json(folder / f"{name}.json")
    if not figures:
        return [["", "", "", "python -m linpath.bench train", "", "", f"no {name}.json"]]
    rows = []
    epochs, images = figures["epochs"], figures["images"]
    head = (f"{figures['arch']} width {figures['width']}, {images} images 3×{figures['size']}², batch "
            f"{figures['batch_size']}, augment {figures['augment']}, {figures['device']}")
    for v in figures["variants"]:
        if name != "train_single" and v["variant"].startswith(("plain", "device", "+")):
            continue  # the single runs are the first invocation's rows; a pack invocation repeats them
        if "skipped" in v:
            rows.append(["", "", "", v["variant"], "", "", f"skipped: {v['skipped']}"])
            continue
        note = f"{v['ratio_to_plain']:.2f}× plain; peak {v['peak_memory_mib']:,.0f} MiB"
        if "compile_seconds" in v:
            note += f"; compile + warm-up {v['compile_seconds']:.1f} s"
        rows.append(["", "", "", v["variant"], _fmt(v["images_per_s"]), _fmt(v["seconds"] / epochs, 2), note])
    for v in figures.get("packing") or []:
        per_seed = v["seconds"] / epochs / v["seeds"]
        rows.append(["", "", "", v["variant"], _fmt(v["images_per_s"]), _fmt(v["seconds"] / epochs, 2),
                     f"all {v['seeds']} seeds; {per_seed:.2f} s per seed-epoch; {v['ratio_to_single']:.2f}× "
                     f"{v['single']}; peak {v['peak_memory_mib']:,.0f} MiB"])
    a = figures["agreement"]
    check = f"agreement with the plain loop {a['max_abs_diff']:.1e} ({'OK' if a['ok'] else 'FAIL'} at 1e-5)"
    if figures.get("pack_agreement"):
        p = figures["pack_agreement"]
        check += f"; pack of {p['seeds']} first step {p['first_loss_max_abs_diff']:.1e} ({'OK' if p['ok'] else 'FAIL'})"
    rows.insert(0, ["", "", "", head, "", "", check])
    return rows


def paths_rows(folder: Path) -> list[list]:
    figures = _json(folder / "paths.json")
    if not figures:
        return [["", "", "", "python -m linpath.bench paths --cifar", "", "", "no paths.json"]]
    images = sum(figures["samples"].values())
    # linpath.study.cost charges a sweep paths × α × images at eval_images_per_s: the figure to put there
    rate = figures["paths"] * figures["alphas"] * images / figures["seconds"]
    note = (f"{figures['arch']} width {figures['width']}, {figures['paths']} paths × {figures['alphas']} α × "
            f"{images} images in {figures['seconds']:.1f} s (strict fp32); peak "
            f"{figures['peak_memory_bytes'] / 2**30:.2f} GiB")
    if figures.get("tf32_max_abs_diff") is not None:
        note += f"; TF32 {figures['tf32_seconds']:.1f} s, max |Δ loss| vs fp32 {figures['tf32_max_abs_diff']:.1e}"
    return [["", "", "", "path sweeps (as linpath.study.cost counts images)", _fmt(rate), "", note]]


def settings_rows(folder: Path) -> list[list]:
    path = folder / "paper_run.yaml"
    if not path.is_file():
        return [["", "", "", "paper base recipe", "", "", "paper_run.yaml missing"]]
    import yaml

    run = yaml.safe_load(path.read_text())
    m, t = run["model"], run["train"]
    note = (f"{m['arch']} width {m['width']}{' with the stem max-pool' if m.get('maxpool') else ''}, "
            f"{run['data']['dataset']} augment {run['data']['augment']}, {t['optimizer']} lr {t['lr']} batch "
            f"{t['batch_size']}, precision {t.get('precision', 'bf16 (default)')}; bench train: "
            f"{(folder / 'bench_args.txt').read_text().strip() if (folder / 'bench_args.txt').is_file() else '?'}")
    return [["", "", "", "paper base recipe (config.yaml + paper.yaml, seed 0)", "", "", note]]


STAGE_ROWS = {"env": env_rows, "settings": settings_rows, "cli-train": cli_rows, "bench-paths": paths_rows,
              "bench-train": lambda f: train_rows(f, "train_single"),
              "bench-packs": lambda f: train_rows(f, "train_packs"),
              "bench-pack10": lambda f: train_rows(f, "train_pack10")}


def summary(folder: Path) -> str:
    stages = read_stages(folder)
    rows, failed_tests = [], []
    for name, stage in stages.items():
        if name == "cuda-tests":
            produced, failed_tests = test_rows(folder)
        else:
            produced = STAGE_ROWS.get(name, lambda f: [["", "", "", "", "", "", ""]])(folder)
        first = [name, stage["status"], f"{stage['seconds']:.0f}"]
        rows.append(first + produced[0][3:])
        rows.extend(produced[1:])
    widths = [max(len(str(r[i])) for r in [COLUMNS, *rows]) for i in range(len(COLUMNS))]
    line = lambda r: "| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    table = [line(COLUMNS), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows)]
    total = sum(s["seconds"] for s in stages.values())
    bad = [f"{n} ({s['status']}, log: {s['log']})" for n, s in stages.items() if s["status"] != "ok"]
    text = "\n".join(table) + f"\n\nall stages: {total:.0f} s"
    text += "\nstages not ok: " + ("; ".join(bad) if bad else "none")
    if failed_tests:
        text += "\nfailed tests:\n" + "\n".join(f"  {t}" for t in failed_tests)
    (folder / "summary.md").write_text(text + "\n")
    (folder / "summary.json").write_text(json.dumps({"columns": COLUMNS, "rows": rows, "stages": stages,
                                                     "failed_tests": failed_tests}, indent=2) + "\n")
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="benchmarks/gpu_check.py", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    p = sub.add_parser("env")
    p.add_argument("out", type=Path)
    p = sub.add_parser("cifar-files")
    p.add_argument("root", type=Path)
    p.add_argument("--train", type=int, default=50_000)
    p.add_argument("--test", type=int, default=10_000)
    p.add_argument("--record", type=Path, default=None, help="also write the image counts here (JSON)")
    p = sub.add_parser("paper-run")
    p.add_argument("out", type=Path)
    p.add_argument("--root", type=Path, required=True)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--device", default="cuda")
    p.add_argument("--width", type=int, default=None, help="override the model width (the dry run's tiny size)")
    p.add_argument("--bench-args", type=Path, default=None, help="also write the matching bench train options here")
    p = sub.add_parser("summary")
    p.add_argument("folder", type=Path)
    args = parser.parse_args(argv)
    if args.what == "env":
        machine(args.out)
    elif args.what == "cifar-files":
        write_cifar(args.root, args.train, args.test, args.record)
    elif args.what == "paper-run":
        paper_run(args.out, args.root, args.epochs, args.device, args.width, args.bench_args)
    else:
        print(summary(args.folder))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
