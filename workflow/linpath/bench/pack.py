"""Seed packing: K seeds of one setting trained together in one process.

The runs of a pack share architecture and recipe and differ only in their seeds
(`init.seed`, `train.seed`, `data.seed`). Every parameter and BatchNorm buffer of the
K models is stacked along a new leading dimension inside one module built by
`models.build`, and its forward runs once under `torch.func.vmap`: the batching rules
turn K convolutions into one grouped convolution (groups=K), K BatchNorms into one
over K·C channels and K linear heads into one batched matmul. That is the "wide
network" without a second definition of every architecture to keep in step with
linpath.engine.models, and seed k's slice of every tensor keeps the key and shape of its
single run, so no state-dict translation is needed.

Invariants:
- Seed k draws its batches from its own DeviceLoader (its own `train.seed` and, through
  `data.seed`, its own subset or labels), steps on its own mean loss (the pack steps on
  the sum of the K means, whose gradient in seed k's slice is that seed's own), and its
  optimiser state is its slice of the stacked state (SGD and Adam act elementwise).
  It therefore follows its single run up to float rounding of the grouped kernels.
- Every seed writes exactly the files its single run writes (linpath.engine.train), in the
  same formats, checkpoint.pt included: a killed pack resumes each seed from its own
  checkpoint, and any seed can be finished as a single run (or a single run joined to a
  pack). Seeds whose checkpoints stand at different epochs (a pack killed between two
  of its checkpoint writes) are brought level first: the ones behind train on their own
  pack until they reach the others.
- A seed leaves the pack when it diverges (its TrainingDiverged, nothing of that epoch
  written, as in a single run), reaches `train.until_train_acc`, or ends; the others go on.
- The forward draws no random numbers (vmap randomness="error"), so the global RNG a
  single run would checkpoint is the seed's freshly seeded model stream; that state is
  what each seed's checkpoint.pt records.
- Per-epoch metrics are computed per seed by the single run's `evaluate`, on a plain
  model holding that seed's state (strict fp32).

"Up to float rounding": an MLP stays within ~1e-7 of its single run over whole runs; a
BatchNorm ResNet stays within 1e-5 only until a ReLU input falls within rounding of zero,
after which it drifts as far as a single run does from itself under another thread count
(tests/test_pack.py says more).
A measurement tool, used by no rule: on a CPU packing does not pay, and on a GPU it is unmeasured.
`python -m linpath.bench train --device cuda` times packs against the fastest single run; `train_pack`
trains real run directories, for the workflow to call once a measurement shows that a pack pays.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.func import functional_call, vmap
from tqdm.auto import tqdm

from ..engine import data as data_mod
from ..engine import models
from ..engine.augment import stream_seed
from ..engine.objective import strict_fp32, summed_loss
from ..engine.train import (
    RunResult,
    StepSettings,
    TargetNotReached,
    TrainingDiverged,
    epoch_metrics,
    evaluated,
    make_optimizer,
    missed_target,
    open_run,
    optimizer_and_schedule,
    optimizer_to,
    record_failure,
    run_result,
    target_reached,
    write_checkpoint,
    write_outputs,
)
from ..foundations.device import synced_time
from ..foundations.hparams import RunSpec, SettingsError
from ..foundations.io import save_torch
from ..foundations.layout import RunDir
from ..foundations.outcome import Outcome, write_outcome

SEED_KEYS = ("init.seed", "train.seed", "data.seed")  # the settings in which the runs of a pack may differ

RunEnd = RunResult | TrainingDiverged | TargetNotReached  # how one run of a pack ended


class StackedModel(nn.Module):
    """K models of one architecture as one module whose every tensor has a leading dimension K.

    `self(xb)` maps a (K, B, ...) batch to (K, B, outputs): slice k goes through model k.
    In training mode the BatchNorm buffers of slice k are updated from slice k's batch only."""

    def __init__(self, model_spec, states: list[dict[str, torch.Tensor]], device: torch.device | str = "cpu"):
        super().__init__()
        with torch.random.fork_rng(devices=[]):  # the constructor's init draws are replaced below
            self.module = models.build(model_spec)
        self.k = len(states)
        for name, _ in list(self.module.named_parameters()):
            _put(self.module, name, nn.Parameter(torch.stack([s[name] for s in states]).to(device)))
        for name, _ in list(self.module.named_buffers()):
            _put(self.module, name, torch.stack([s[name] for s in states]).to(device))
        self.tensors = {**dict(self.module.named_parameters()), **dict(self.module.named_buffers())}
        self._vmapped = vmap(self._one, randomness="error")

    def _one(self, tensors: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        return functional_call(self.module, tensors, (x,))

    def forward(self, xb: torch.Tensor) -> torch.Tensor:
        return self._vmapped(self.tensors, xb)

    def state(self, k: int) -> dict[str, torch.Tensor]:
        """Seed k's state_dict (keys in the single model's order) as CPU copies."""
        return {name: t[k].detach().to("cpu", copy=True) for name, t in self.module.state_dict().items()}


def _put(module: nn.Module, name: str, value: torch.Tensor) -> None:
    owner, _, attr = name.rpartition(".")
    setattr(module.get_submodule(owner), attr, value)


def stack_optimizer_states(states: list[dict]) -> dict:
    """One optimiser state_dict from K per-seed ones. Per-parameter entries shaped like their
    parameter are stacked; scalars (Adam's step) must agree, as they do for seeds at one epoch."""
    merged = copy.deepcopy({k: v for k, v in states[0].items() if k != "state"})
    merged["state"] = {}
    layout = {index: sorted(entry) for index, entry in states[0]["state"].items()}
    if any({i: sorted(e) for i, e in s["state"].items()} != layout for s in states[1:]):
        raise AssertionError("the seeds' optimiser states hold different entries")
    for index, first in states[0]["state"].items():
        entry = {}
        for name, value in first.items():
            values = [s["state"][index][name] for s in states]
            if torch.is_tensor(value) and value.dim() > 0:
                entry[name] = torch.stack(values)
            else:
                if not all(_same(value, v) for v in values[1:]):
                    raise AssertionError(f"optimiser state {name!r} differs between seeds at one epoch")
                entry[name] = value
        merged["state"][index] = entry
    return merged


def slice_optimizer_state(state: dict, k: int) -> dict:
    """Seed k's optimiser state_dict out of a stacked one, as CPU copies (the single run's format)."""
    out = copy.deepcopy({key: v for key, v in state.items() if key != "state"})
    out["state"] = {index: {name: (v[k].to("cpu", copy=True) if torch.is_tensor(v) and v.dim() > 0
                                   else (v.cpu().clone() if torch.is_tensor(v) else v))
                            for name, v in entry.items()}
                    for index, entry in state["state"].items()}
    return out


def _same(a, b) -> bool:
    return torch.equal(a, b) if torch.is_tensor(a) else a == b


def packed_step(forward: StackedModel, optimizer: torch.optim.Optimizer, xb: torch.Tensor, yb: torch.Tensor,
                loss: str, how: StepSettings) -> torch.Tensor:
    """`train.train_step` for K seeds: xb (K, B, ...), yb (K, B); returns the K batch mean losses,
    detached and left on the device (no sync)."""
    with torch.autocast(how.device.type, dtype=torch.bfloat16, enabled=how.bf16):
        logits = forward(xb)
    means = torch.stack([summed_loss(logits[k], yb[k], loss) for k in range(len(yb))]) / yb.shape[1]
    optimizer.zero_grad(set_to_none=True)
    means.sum().backward()
    optimizer.step()
    return means.detach()


def packed_batches(loaders: list[data_mod.DeviceLoader], epoch: int):
    """Seed k's batches of `epoch`, exactly as its single run draws them, stacked along dim 0."""
    for batches in zip(*(loader.epoch(epoch) for loader in loaders)):
        yield torch.stack([x for x, _ in batches]), torch.stack([y for _, y in batches])


# --- a pack of runs ------------------------------------------------------------------------------


@dataclass(eq=False)  # seats are compared by identity
class Seat:
    """One run of a pack and where it stands. Its state lives in the pack while it is a member,
    here (on the CPU) while it is not."""

    spec: RunSpec  # resolved against the data
    out: Path
    init_state: dict
    loader: data_mod.DeviceLoader
    eval_sets: dict
    history: list[dict] = field(default_factory=list)
    done: int = 0
    checkpointed: int = 0
    model_state: dict | None = None
    optimizer_state: dict | None = None  # None: a fresh optimiser
    scheduler_state: dict | None = None
    outcome: RunEnd | None = None


class Pack:
    """The seats that train together now: one stacked model, optimiser and LR schedule."""

    def __init__(self, seats: list[Seat], how: StepSettings):
        self.seats, self.how = seats, how
        spec = seats[0].spec
        self.model = StackedModel(spec.model, [s.model_state for s in seats], how.device)
        self.optimizer, self.scheduler = optimizer_and_schedule(spec, self.model.module)  # the single run's groups
        resumed = [s.optimizer_state is not None for s in seats]
        assert all(resumed) or not any(resumed), "seats at one epoch are all fresh or all resumed"
        if all(resumed):
            self.optimizer.load_state_dict(stack_optimizer_states([s.optimizer_state for s in seats]))
            self.scheduler.load_state_dict(seats[0].scheduler_state)
        optimizer_to(self.optimizer, how.device)
        self.forward = torch.compile(self.model) if how.compile else self.model

    def train_epoch(self, epoch: int, loss: str, progress: bool) -> tuple[torch.Tensor, float | None]:
        """The steps of one epoch and the LR schedule's step; returns the (steps, seats) batch losses
        and, when compiled, the seconds of the first step (compilation included)."""
        self.model.train()
        losses, first_step, t0 = [], None, synced_time(self.how.device)
        batches = packed_batches([s.loader for s in self.seats], epoch)
        for xb, yb in tqdm(batches, total=len(self.seats[0].loader), desc=f"epoch {epoch}", leave=False,
                           disable=not progress, unit="batch"):
            losses.append(packed_step(self.forward, self.optimizer, xb, yb, loss, self.how))
            if self.how.compile and first_step is None:
                first_step = synced_time(self.how.device) - t0
        self.scheduler.step()
        return torch.stack(losses), first_step

    def states(self, seat: Seat) -> tuple[dict, dict, dict]:
        """A member's model, optimiser and scheduler state_dicts, as CPU copies."""
        k = self.seats.index(seat)
        return (self.model.state(k), slice_optimizer_state(self.optimizer.state_dict(), k),
                copy.deepcopy(self.scheduler.state_dict()))

    def release(self) -> None:
        """Hand the members that go on their states back, before the pack is rebuilt without them."""
        for seat in self.seats:
            if seat.outcome is None:
                seat.model_state, seat.optimizer_state, seat.scheduler_state = self.states(seat)


def model_stream_rng(seed: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The global RNG states a single run holds after seeding its model stream, and keeps (nothing
    in its steps draws from them): what its checkpoint records."""
    cuda = device.type == "cuda"
    with torch.random.fork_rng(devices=[device] if cuda else []):
        torch.manual_seed(stream_seed(seed, "model"))
        return torch.get_rng_state(), (torch.cuda.get_rng_state(device) if cuda else None)


def check_packable(specs: list[RunSpec], outs: list[Path]) -> None:
    """Runs of one pack must share every setting but their seeds, and have distinct directories."""
    if not specs or len(specs) != len(outs):
        raise SettingsError(f"a pack needs one output directory per run: got {len(specs)} runs, "
                            f"{len(outs)} directories")
    if len({Path(o).resolve() for o in outs}) != len(outs):
        raise SettingsError("the runs of a pack need distinct output directories (--out)")
    base = _recipe(specs[0])
    for spec in specs[1:]:
        for key, value in _recipe(spec).items():
            if base[key] != value:
                raise SettingsError(f"runs of a pack may differ only in {', '.join(SEED_KEYS)}: {key} is "
                                    f"{base[key]} in run {specs[0].name} and {value} in run {spec.name}")


def _recipe(spec: RunSpec) -> dict[str, str]:
    """Every setting but the name and the seeds: dotted key (section.setting) -> JSON text."""
    raw = spec.to_dict()
    raw.pop("name")
    flat = {f"{section}.{key}": json.dumps(value, sort_keys=True) for section, settings in raw.items()
            for key, value in settings.items()}
    return {key: value for key, value in flat.items() if key not in SEED_KEYS}


def train_pack(specs: list[RunSpec], outs: list[str | Path], *, threads: int | None = None, progress: bool = True,
               eval_cache: str | Path | None = None) -> list[RunEnd]:
    """Train the runs `specs` into the directories `outs` as one pack, resuming each seed from its
    checkpoint.pt. Returns per run its RunResult or the error that ended it alone (TrainingDiverged,
    TargetNotReached); settings errors are raised before any step. The steps run in IEEE fp32 (bf16 autocast
    inside where train.precision asks), as a single run's do (linpath.engine.train)."""
    with strict_fp32():  # sets the flags of every backend; autocast is switched per step (packed_step)
        return _train_pack(specs, outs, threads=threads, progress=progress, eval_cache=eval_cache)


def _train_pack(specs: list[RunSpec], outs: list[str | Path], *, threads: int | None, progress: bool,
                eval_cache: str | Path | None) -> list[RunEnd]:
    outs = [Path(o) for o in outs]
    check_packable(specs, outs)
    started = time.perf_counter()
    if threads:
        torch.set_num_threads(threads)
    seats = _open_seats(specs, outs, eval_cache)
    live = [s for s in seats if s.outcome is None]
    if not live:
        for seat in seats:
            _record(seat)
        return [s.outcome for s in seats]
    t, model_spec, device = live[0].spec.train, live[0].spec.model, live[0].loader.device
    how = dataclasses.replace(StepSettings.of(t, device, model_spec.arch), channels_last=False)  # batches are 5-D
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = not t.deterministic
        torch.backends.cudnn.deterministic = t.deterministic
    with torch.random.fork_rng(devices=[]):
        evaluator = models.build(model_spec).to(device)  # a plain model: metrics exactly as a single run's
    for seat in live:
        if not seat.history:  # θ₀, with the LR a single run records for epoch 0 (its first group's)
            lr = make_optimizer(seat.spec, evaluator).param_groups[0]["lr"]
            evaluator.load_state_dict(seat.model_state)
            seat.history.append(epoch_metrics(evaluator, seat.eval_sets, t.loss, 0, lr, how))

    pack: Pack | None = None
    compile_seconds = None
    bar = tqdm(total=t.epochs, unit="epoch", desc=f"pack of {len(seats)}", disable=not progress)
    while True:
        for seat in seats:
            if seat.outcome is None and _ends_now(seat):
                _end(seat, pack, evaluator, how, compile_seconds, started)
        live = [s for s in seats if s.outcome is None]
        if not live:
            break
        epoch = min(s.done for s in live) + 1
        members = [s for s in live if s.done == epoch - 1]  # seats ahead wait for the ones behind
        if pack is None or pack.seats != members:
            if pack is not None:
                pack.release()
            pack = Pack(members, how)
        lr = pack.optimizer.param_groups[0]["lr"]
        losses, first_step = pack.train_epoch(epoch, t.loss, progress)
        compile_seconds = compile_seconds or first_step
        for k, seat in enumerate(members):
            bad = ~torch.isfinite(losses[:, k])
            if bad.any():  # this seed stops here, as its single run would; the others go on
                seat.outcome = TrainingDiverged(seat.spec.name, epoch, losses[:, k][bad][0].item(), seat.history[-1])
            else:
                seat.done = epoch
                _after_epoch(seat, pack, evaluator, epoch, lr, how)
        bar.update(epoch - bar.n)
    bar.close()
    for seat in seats:
        _record(seat)
    return [s.outcome for s in seats]


def _open_seats(specs: list[RunSpec], outs: list[Path], eval_cache) -> list[Seat]:
    """Claim every run directory. Seeds with equal `data` settings share one prepared data set on the
    device; each loader keeps its own seed (DeviceLoader.epoch draws order and augmentation from it)."""
    on_device: dict[str, tuple] = {}  # data settings -> (prepared, evaluation sets, loader)
    seats = []
    for spec, out in zip(specs, outs):
        key = json.dumps(dataclasses.asdict(spec.data), sort_keys=True)
        prep = on_device[key][0] if key in on_device else data_mod.prepare(spec.data)
        opened = open_run(spec, out, prep, eval_cache)
        spec, device = opened.spec, opened.device
        if key not in on_device:
            eval_sets = {"train": (prep.train_x.to(device), prep.train_y.to(device)),
                         "test": (prep.test_x.to(device), prep.test_y.to(device))}
            loader = data_mod.DeviceLoader(*eval_sets["train"], spec.train.batch_size, 0, prep.augment, device,
                                           prep.pad_value)
            on_device[key] = (prep, eval_sets, loader)
        _, eval_sets, loader = on_device[key]
        loader = copy.copy(loader)
        loader.seed = spec.train.seed
        seat = Seat(spec, out, opened.init_state, loader, eval_sets)
        if opened.finished is not None:
            seat.outcome = run_result(out, opened.finished, time.perf_counter())
        elif opened.checkpoint is not None:
            ckpt = opened.checkpoint
            seat.history, seat.done = list(ckpt["metrics"]), int(ckpt["epoch"])
            seat.checkpointed = seat.done
            seat.model_state, seat.optimizer_state = ckpt["model"], ckpt["optimizer"]
            seat.scheduler_state = ckpt["scheduler"]
        else:
            seat.model_state = opened.init_state
        seats.append(seat)
    return seats


def _after_epoch(seat: Seat, pack: Pack, evaluator: nn.Module, epoch: int, lr: float, how: StepSettings) -> None:
    """What a single run does after the steps of an epoch: metrics, kept states, checkpoint."""
    t = seat.spec.train
    k = pack.seats.index(seat)
    if evaluated(t, epoch):
        evaluator.load_state_dict(pack.model.state(k))
        seat.history.append(epoch_metrics(evaluator, seat.eval_sets, t.loss, epoch, lr, how))
    if epoch in t.save_epochs:
        save_torch(pack.model.state(k), RunDir(seat.out).epoch(epoch))
    if epoch % t.checkpoint_every == 0 and epoch < t.epochs:
        _checkpoint(seat, epoch, *pack.states(seat), how.device)


def _checkpoint(seat: Seat, epoch: int, model_state: dict, optimizer_state: dict, scheduler_state: dict,
                device: torch.device) -> None:
    write_checkpoint(RunDir(seat.out).checkpoint, seat.spec, epoch, model_state, optimizer_state, scheduler_state,
                     seat.history, *model_stream_rng(seat.spec.train.seed, device))
    seat.checkpointed = epoch


def _record(seat: Seat) -> None:
    """What `train.train` leaves beside its states: outcome.yaml, and failed.yaml for a deterministic failure."""
    if isinstance(seat.outcome, (TrainingDiverged, TargetNotReached)):
        record_failure(seat.out, seat.spec, seat.outcome)
        return
    if not RunDir(seat.out).outcome.is_file():  # finished before it could write its outcome
        write_outcome(Outcome("trained", run=seat.spec.name, settings_digest=seat.spec.digest()), seat.out)
    RunDir(seat.out).failed.unlink(missing_ok=True)


def _ends_now(seat: Seat) -> bool:
    """The single run's loop would not start another epoch."""
    return seat.done >= seat.spec.train.epochs or target_reached(seat.spec.train, seat.history)


def _end(seat: Seat, pack: Pack | None, evaluator: nn.Module, how: StepSettings, compile_seconds: float | None,
         started: float) -> None:
    """Finish a seat as its single run finishes: its outputs, or TargetNotReached with its last state kept."""
    in_pack = pack is not None and seat in pack.seats
    states = pack.states(seat) if in_pack else (seat.model_state, seat.optimizer_state, seat.scheduler_state)
    t = seat.spec.train
    if missed_target(t, seat.history):
        if seat.checkpointed < seat.done:  # a retry then fails at once instead of training again
            _checkpoint(seat, seat.done, *states, how.device)
        seat.outcome = TargetNotReached(seat.spec.name, seat.history[-1]["train_acc"], t.until_train_acc, t.epochs,
                                        seat.history[-1])
    else:
        seat.outcome = write_outputs(seat.spec, seat.out, evaluator, seat.init_state, states[0], seat.history, how,
                                     compile_seconds, started)
