"""Atomic writes and safe checkpoint loading.

Every file is written to a temporary name beside its target and renamed into
place, so a killed job never leaves a file that looks complete. Checkpoints
are read with `weights_only=True`: a checkpoint file cannot run code.
torch is imported by the functions that need it, so that the command line
answers --help and usage errors without loading it.
"""

from __future__ import annotations

import os
import pickle
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import yaml

if TYPE_CHECKING:  # annotations only: torch is imported where it is used
    import torch


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path; on success it replaces `path`, on error it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def save_torch(obj: Any, path: str | Path) -> None:
    import torch

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def write_text(text: str, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_yaml(data: Any, path: str | Path) -> None:
    write_text(yaml.safe_dump(data, sort_keys=False), path)


def note(log: str | Path | None, message: str) -> None:
    """One line in a job's log file, or on stdout where there is none (a command's stdout is its log)."""
    if not log:
        print(message.rstrip())
    else:
        Path(log).parent.mkdir(parents=True, exist_ok=True)
        with open(log, "a") as handle:
            handle.write(message.rstrip() + "\n")


def write_parquet(frame, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        frame.to_parquet(tmp, index=False)


class CheckpointError(RuntimeError):
    """A checkpoint is missing, corrupt or holds more than plain tensors."""


def load_checkpoint(path: str | Path) -> Any:
    """Load a torch file with `weights_only=True`, naming the file on failure.

    A truncated or damaged file can make the unpickler fail in almost any way (EOFError,
    RuntimeError from the zip reader, OSError, KeyError, UnicodeDecodeError, ...); whatever it
    raises while reading this one file, the file is unreadable, and the error says which."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        with warnings.catch_warnings(record=True) as caught:  # torch warns about some damaged files first
            warnings.simplefilter("always")
            loaded = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"refused to load {path}: it holds objects other than tensors and plain containers "
            f"(weights_only=True), or it is damaged. Detail: {_unpickling_detail(err)}"
        ) from None
    except Exception as err:  # noqa: BLE001 - see the docstring: the only input here is the file
        detail = _first_line(err) or type(err).__name__
        raise CheckpointError(f"could not read checkpoint {path} (truncated or not a torch file?): {detail}") from None
    for warning in caught:  # a file that loads keeps its warnings; a refused one ends in one line
        warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    return loaded


def _first_line(err: BaseException) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[0] if lines else ""


def _unpickling_detail(err: BaseException) -> str:
    """The line of torch's weights_only refusal that names what was refused (its first lines are advice)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    named = [line for line in lines if "GLOBAL" in line or line.startswith("Unsupported")]
    return (named or lines or [type(err).__name__])[0]


def load_state(path: str | Path) -> dict[str, "torch.Tensor"]:
    """A state_dict (name -> tensor) from a file."""
    import torch

    state = load_checkpoint(path)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path} is not a state_dict (a mapping of names to tensors)")
    return state
