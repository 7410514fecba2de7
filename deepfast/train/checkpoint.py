"""Checkpoints: written atomically, loaded without ever executing code from the file, refused when damaged,
and the random number generator states that make a resumed run continue exactly as the uninterrupted one.

Format 2 (the current format): a ``torch.save`` file of a dict whose every value is a tensor or a
plain type (dict, list, tuple, str, int, float, bool, None). ``torch.load(path, weights_only=True)``,
torch's restricted unpickler, which builds nothing else and calls no function the file names, loads
it; deepfast loads every checkpoint that way. Its "digest" is the SHA-256 of all its other values
(``digest``): keys, plain values, and each tensor's dtype, shape and bytes, in order, so a flipped bit
in any value is refused. Format 1 (older deepfast) kept NumPy's RNG state as an array, which only the
full unpickler loads, and that unpickler runs whatever code a file holds: such files, and any file
needing it, are refused unless the caller trusts the file (``trusted=True``, ``--trust-checkpoint``).
"""

from __future__ import annotations

import hashlib
import io
import random
from pathlib import Path

import numpy as np
import torch

from deepfast.files import atomic_file

FORMAT = 2
# What a training checkpoint holds, and of which type (run_checkpoint.save_run writes them; every loader may
# read them).
KEYS = {
    "format": int,
    "trainer": str,
    "config": dict,
    "channels": int,
    "epoch": int,
    "batch": int,
    "sums": dict,
    "models": dict,
    "optimizers": dict,
    "schedulers": dict,
    "scaler": dict,
    "ranks": list,
    "world_size": int,
}
TRUST_HINT = (
    "only Python's full unpickler loads it, and that runs whatever code the file holds; if you "
    "trust where the file came from, load it with trusted=True (on the command line: "
    "--trust-checkpoint), and a save of the run rewrites it in the safe format"
)


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded: damaged, incomplete, not deepfast's, or needing the full
    unpickler without the caller's trust. The message names the file and what is wrong."""


def digest(obj: object) -> str:
    """SHA-256 (hex) of a checkpoint's values: dicts (keys and values in order), lists, tuples, str,
    bytes, int, float (exact, by ``float.hex``), bool, None, torch dtypes and devices, and tensors
    (dtype, shape and bytes). TypeError for anything else: it could not be loaded safely."""
    h = hashlib.sha256()
    _feed(h, obj)
    return h.hexdigest()


def _feed(h, obj: object) -> None:
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous().reshape(-1)
        h.update(f"T{t.dtype}{tuple(obj.shape)}:".encode())
        h.update(t.view(torch.uint8).numpy() if t.numel() else b"")
    elif isinstance(obj, dict):
        h.update(f"D{len(obj)}:".encode())
        for key, value in obj.items():
            _feed(h, key)
            _feed(h, value)
    elif isinstance(obj, (list, tuple)):
        h.update(f"{'L' if isinstance(obj, list) else 'U'}{len(obj)}:".encode())
        for value in obj:
            _feed(h, value)
    elif isinstance(obj, (str, bytes)):
        data = obj.encode() if isinstance(obj, str) else obj
        h.update(f"{'S' if isinstance(obj, str) else 'B'}{len(data)}:".encode() + data)
    elif obj is None or isinstance(obj, (bool, int, torch.dtype, torch.device)):
        h.update(f"{type(obj).__name__}:{obj!r};".encode())
    elif isinstance(obj, float):
        h.update(f"F{obj.hex()};".encode())
    else:
        raise TypeError(f"a checkpoint holds tensors and plain values only, got a {type(obj).__name__}")


def atomic_save(obj: dict, path: str | Path) -> None:
    """Writes ``obj`` (a dict of tensors and plain values) with its "digest" to ``path`` atomically
    (``deepfast.files.atomic_file``; serialized in memory first). A crash, a kill or a full disk leaves
    the previous file whole; a failed write raises OSError (ENOSPC for a full disk) saying so."""
    path = Path(path)
    buffer = io.BytesIO()
    torch.save({**obj, "digest": digest(obj)}, buffer)
    try:
        with atomic_file(path) as f:
            f.write(buffer.getbuffer())
    except OSError as err:
        kept = f"the previous {path.name} is kept as it was" if path.exists() else f"no {path.name} was written"
        raise OSError(err.errno, f"cannot write checkpoint {path}: {err.strerror or err} ({kept})") from err


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu", trusted: bool = False) -> dict:
    """Loads a deepfast training checkpoint with torch's restricted unpickler (``weights_only=True``),
    which runs no code from the file, and checks its digest and keys.

    ``trusted=True`` allows the full unpickler for a file that needs it (format 1, older deepfast), and
    a file without a digest: only for files from a source you trust. Raises FileNotFoundError for a
    missing file and CheckpointError (a ValueError) naming the file for everything else.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # noqa: BLE001 - a corrupt file raises many kinds of errors
        unsafe = _unsafe_globals(path)
        if not unsafe:
            raise CheckpointError(f"cannot read checkpoint {path}: {err}") from err
        if not trusted:
            raise CheckpointError(
                f"checkpoint {path} holds objects ({', '.join(unsafe[:5])}) that {TRUST_HINT}"
            ) from None
        ckpt = torch.load(path, map_location=map_location, weights_only=False)
    if not isinstance(ckpt, dict) or "config" not in ckpt or "models" not in ckpt:
        raise CheckpointError(f"{path} is not a deepfast training checkpoint")
    if "digest" in ckpt:
        stored = ckpt.pop("digest")
        try:
            actual = digest(ckpt)
        except TypeError as err:
            raise CheckpointError(f"checkpoint {path} is damaged: {err}") from None
        if stored != actual:
            raise CheckpointError(
                f"checkpoint {path} is damaged: its contents do not match the SHA-256 digest "
                "stored in it (a corrupted or altered file); it is refused"
            )
    elif not trusted:
        raise CheckpointError(f"checkpoint {path} has no digest (written by an older deepfast, format 1): {TRUST_HINT}")
    missing = [k for k in KEYS if k not in ckpt]
    if missing:
        raise CheckpointError(f"checkpoint {path} is incomplete: it lacks {', '.join(map(repr, missing))}")
    wrong = [
        f"{k} is a {type(ckpt[k]).__name__}, not a {t.__name__}" for k, t in KEYS.items() if not isinstance(ckpt[k], t)
    ]
    if wrong:
        raise CheckpointError(f"checkpoint {path} is not one deepfast wrote: {'; '.join(wrong)}")
    return ckpt


def load_state(obj: torch.nn.Module | object, state: object, what: str, path: str | Path) -> None:
    """``obj.load_state_dict(state)`` for a model, optimizer, scheduler or scaler called ``what`` of
    checkpoint ``path``; a CheckpointError naming both and what differs (missing, unexpected and
    reshaped weights of a model) instead of load_state_dict's own error."""
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {path} is incomplete: it holds no state for {what}")
    if isinstance(obj, torch.nn.Module):
        own = obj.state_dict()
        missing = [k for k in own if k not in state]
        unexpected = [k for k in state if k not in own]
        reshaped = [
            f"{k} {tuple(state[k].shape)} there, {tuple(v.shape)} here"
            for k, v in own.items()
            if isinstance(state.get(k), torch.Tensor) and state[k].shape != v.shape
        ]
        differences = [
            f"{label}: {_some(names)}"
            for label, names in (("missing", missing), ("unexpected", unexpected), ("shapes differ", reshaped))
            if names
        ]
        if differences:
            raise CheckpointError(
                f"checkpoint {path}: the weights of {what} do not fit the model its settings build "
                f"({'; '.join(differences)}); was it written by another version of deepfast?"
            )
    try:
        obj.load_state_dict(state)
    except (RuntimeError, ValueError, KeyError, TypeError, IndexError) as err:
        raise CheckpointError(f"checkpoint {path}: cannot load the state of {what}: {err}") from None


def _some(names: list[str], n: int = 4) -> str:
    """The first ``n`` of ``names``, and how many there are in all when more."""
    return ", ".join(names[:n]) + (f" ... ({len(names)} in all)" if len(names) > n else "")


def _unsafe_globals(path: Path) -> list[str]:
    """The classes and functions a pickle names that torch's restricted unpickler refuses ([] when the
    file cannot be read as a torch checkpoint at all)."""
    try:
        return list(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    except Exception:  # noqa: BLE001 - not a torch file, or a corrupt one
        return []


def rng_state() -> dict:
    """The states of Python's, NumPy's, torch's CPU and (when there is one) current CUDA generators, as
    tensors and plain values (NumPy's keys as an int64 tensor)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {
            "bit_generator": name,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict) -> None:
    """Restores ``rng_state()`` (or a format-1 state, NumPy's as its own tuple)."""
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    numpy = state["numpy"]
    if isinstance(numpy, dict):
        numpy = (
            numpy["bit_generator"],
            numpy["keys"].numpy().astype(np.uint32),
            numpy["pos"],
            numpy["has_gauss"],
            numpy["cached_gaussian"],
        )
    np.random.set_state(numpy)
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])
