"""Model sources: build a network from a recipe's ``model:`` block, and load checkpoints into it."""

from __future__ import annotations

import argparse
import difflib
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from torch import nn

from amalgam.config.schema import TeacherConfig, expand_path
from amalgam.errors import AmalgamError, error_line
from amalgam.io import zip_problem
from amalgam.registry import Registry
from amalgam.teachers.factories import build_from_factory, import_factory
from amalgam.teachers.inputs import timm_model_size


@dataclass(frozen=True)
class ModelSource:
    """A registered ``model.from``: ``build(kwargs, base_dir) -> nn.Module`` and ``check(kwargs, base_dir)``,
    which validates the recipe's arguments without building (raising a one-line AmalgamError).
    ``unloaded(kwargs)`` says what a teacher built without ``checkpoint`` runs with ("" when its
    model carries its weights, as a TorchScript file does)."""

    build: Callable[[dict, Path], nn.Module]
    check: Callable[[dict, Path], None]
    unloaded: Callable[[dict], str] = lambda kwargs: "none: its weights are the factory's own"
    #: why a network built so, with no checkpoint and no weights file among its args, leaves weights it names
    #: unread (a stop naming the fix), or None
    weights_unread: Callable[[dict], Optional[str]] = lambda kwargs: None


#: how a note of :func:`unloaded_note` says a teacher runs with weights drawn at random
RANDOM = "(random: "


def _random_weights(why: str) -> Callable[[dict], str]:
    return lambda kwargs: f"none: its weights are the factory's own {RANDOM}{why})"


#: how a note of :func:`unloaded_note` says only some of the teacher's weights are drawn at random
SOME_DRAWN = " weight tensors: "


def runs_random(note: str) -> Optional[str]:
    """How much of its weights a teacher's checkpoint note says are drawn at random: "all", "some" (a fresh head
    on a pretrained body), or None; the note's wording is this module's, read here only."""
    if RANDOM not in note:
        return None
    return "some" if SOME_DRAWN in note else "all"


def _torchvision_unloaded(kwargs: dict) -> str:
    if kwargs.get("weights") is not None or kwargs.get("weights_backbone") is not None:
        return "none: its weights are torchvision's (weights / weights_backbone)"
    return _random_weights("weights=None")(kwargs)


#: ``from:`` name -> :class:`ModelSource`
MODEL_SOURCES: Registry[ModelSource] = Registry("model source")


def _check_names(kind: str, name: Any, valid: list[str], key: str = "name") -> None:
    if not isinstance(name, str):
        raise AmalgamError(f"{key}: required string naming the {kind}")
    if name not in valid:
        close = [v for v in valid if v.lower().startswith(name.lower()[:3])][:8]
        hint = f" (close: {', '.join(close)})" if close else ""
        raise AmalgamError(f"{key}: unknown {kind} '{name}'{hint}")


#: torchvision builders that set ``transform_input`` true when given torchvision's weights and leave it false
#: without: a network fine-tuned from those weights needs it true, and its state dict does not say so
TRANSFORM_INPUT_BUILDERS = ("googlenet", "inception_v3", "quantized_googlenet", "quantized_inception_v3")


def _torchvision_check(kw: dict, base: Path) -> None:
    import torchvision

    name = kw.get("name")
    _check_names("torchvision model", name, torchvision.models.list_models())
    if name in TRANSFORM_INPUT_BUILDERS and kw.get("weights") is None and "transform_input" not in kw:
        raise AmalgamError(  # a trial's fine-tuned googlenet ran at top-1 0.24 for its own 0.70, without a word
            f"transform_input: required for torchvision's {name}, which re-normalises its input with it: set true"
            " if the network was fine-tuned from torchvision's ImageNet weights (built with them, it is true, and a"
            " state dict does not hold it), false if it was trained from scratch (torchvision's default without"
            " weights)"
        )


def _torchvision_build(kw: dict, base: Path) -> nn.Module:
    import inspect

    import torchvision

    kw = dict(kw)
    name = kw.pop("name")
    # torchvision's segmentation builders default weights_backbone to ImageNet weights, which it
    # downloads: nothing is downloaded unless the recipe asks (weights come from `checkpoint:`)
    params = inspect.signature(torchvision.models.get_model_builder(name)).parameters
    for key in ("weights", "weights_backbone"):
        if key in params:
            kw.setdefault(key, None)
    try:
        return torchvision.models.get_model(name, **kw)
    except OSError as exc:  # urllib's URLError among them: the weights asked for are not in torch's cache
        asked = [f"{key}: {kw[key]}" for key in ("weights", "weights_backbone") if kw.get(key) is not None]
        if not asked:
            raise
        raise AmalgamError(
            f"{' and '.join(asked)}: torchvision could not download them ({error_line(exc)}); amalgam reads a"
            " teacher's weights from checkpoint: (a state_dict file): leave out weights and give that file"
        ) from None


def _timm_check(kw: dict, base: Path) -> None:
    import timm

    name = kw.get("name")
    if isinstance(name, str) and name.startswith("hf-hub:"):
        raise AmalgamError(
            f"name: '{name}' downloads from the Hugging Face hub, which amalgam never does: give its folder as"
            " local-dir:<folder> (timm's save_for_hf layout), or the architecture's name and the weights as checkpoint:"
        )
    if isinstance(name, str) and name.startswith("local-dir:"):  # timm reads the architecture from its config.json
        folder = _resolve(name.removeprefix("local-dir:"), base)
        if not (folder / "config.json").is_file():
            raise AmalgamError(f"name: {name}: no config.json in {folder} (timm's save_for_hf layout)")
    else:  # a tagged name (resnet10t.c3_in1k) picks that tag's pretrained_cfg: its mean, std and size
        _check_names("timm model", name, timm.list_models() + timm.list_models(pretrained=True))
    timm_model_size(kw)  # img_size / input_size: the teacher's input size (inputs.py)


def _timm_build(kw: dict, base: Path) -> nn.Module:
    import timm

    timm_model_size(kw)  # a malformed or conflicting size stops in one line before timm sees it
    kw = dict(kw)
    name = kw.pop("name")
    if name.startswith("local-dir:"):  # resolved against the recipe's folder, as every path of a recipe
        name = f"local-dir:{_resolve(name.removeprefix('local-dir:'), base)}"
    return timm.create_model(name, pretrained=False, **kw)


def _smp_check(kw: dict, base: Path) -> None:
    import segmentation_models_pytorch as smp

    # smp matches architecture names case-insensitively (create_model lowers them): so does the check
    mapping = getattr(smp, "MODEL_ARCHITECTURES_MAPPING", {})
    archs = {name.lower(): cls.__name__ for name, cls in mapping.items()}
    arch = kw.get("arch")
    if archs and (not isinstance(arch, str) or arch.lower() not in archs):
        shown = ", ".join(sorted(archs.values()))
        raise AmalgamError(f"arch: unknown smp architecture '{arch}' (expected one of: {shown})")
    check_encoder_name(kw.get("encoder", "resnet34"), key="encoder")


def check_encoder_name(name: Any, key: str = "encoder") -> None:
    """Raises unless ``name`` is an smp encoder (``tu-<timm name>`` included)."""
    import segmentation_models_pytorch as smp
    import timm

    if isinstance(name, str) and name.startswith("tu-"):
        if (model := name[3:].split(".")[0]) not in timm.list_models():
            close = difflib.get_close_matches(model, timm.list_models(), n=5, cutoff=0.75)
            hint = f" (close: {', '.join('tu-' + c for c in close)})" if close else ""
            raise AmalgamError(f"{key}: unknown timm encoder '{name}'{hint}")
        return
    if isinstance(name, str) and name not in smp.encoders.get_encoder_names() and name in timm.list_models():
        raise AmalgamError(f"{key}: '{name}' is a timm model, not an smp encoder name: write tu-{name}")
    _check_names("smp encoder", name, smp.encoders.get_encoder_names(), key=key)


def _smp_build(kw: dict, base: Path) -> nn.Module:
    import segmentation_models_pytorch as smp

    kw = dict(kw)
    arch, encoder = kw.pop("arch"), kw.pop("encoder", "resnet34")
    kw["encoder_weights"] = None  # nothing is downloaded: weights come from the checkpoint
    return smp.create_model(arch, encoder_name=encoder, **kw)


def _torchscript_check(kw: dict, base: Path) -> None:
    if "path" not in kw:
        raise AmalgamError("path: required for a torchscript model")
    if extra := [k for k in kw if k != "path"]:  # a trial's `output: inverse` here was read as metric
        misplaced = [k for k in extra if k in TeacherConfig.model_fields]
        where = f" ({misplaced[0]} is a key of the teacher: write it beside model:, not inside it)" if misplaced else ""
        raise AmalgamError(f"{extra[0]}: a torchscript model takes path only, nothing is passed to it{where}")
    path = _resolve(kw["path"], base)
    if not path.is_file():
        raise AmalgamError(f"path: TorchScript file not found: {path}")


def _torchscript_build(kw: dict, base: Path) -> nn.Module:
    path = _resolve(kw["path"], base)
    _whole(path, "path: TorchScript file")
    try:
        with warnings.catch_warnings():  # torch 2.9+ marks TorchScript deprecated; users still ship it
            warnings.simplefilter("ignore", FutureWarning)
            return torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:  # noqa: BLE001 - any load failure means an unusable file
        raise AmalgamError(f"path: cannot load TorchScript file {path}: {str(exc).splitlines()[0]}") from None


def _whole(path: Path, what: str) -> None:
    """Refuses a torch zip file whose entries fail their CRC: a zeroed stretch loaded into wrong weights, and a
    trial's teacher was distilled at 0.62 mIoU instead of 0.66 without a word."""
    if zipfile.is_zipfile(path) and (problem := zip_problem(path)):
        raise AmalgamError(f"{what} {path} is damaged: {problem}: copy it again from where it was made")


def _python_check(kw: dict, base: Path) -> None:
    import_factory(kw.get("factory"), base)  # refuses modules outside the recipe's folder before importing


def _python_build(kw: dict, base: Path) -> nn.Module:
    return build_from_factory(kw, base)


def _resolve(path: str | Path, base: Path) -> Path:
    path = expand_path(path, base)
    return path if path.is_absolute() else base / path


MODEL_SOURCES.add("torchvision", ModelSource(_torchvision_build, _torchvision_check, _torchvision_unloaded))


def _timm_weights_unread(kwargs: dict) -> Optional[str]:
    name = str(kwargs.get("name", ""))
    if not name.startswith("local-dir:"):  # a trial's folder ran with random weights, a warning its build went past
        return None
    folder = name.removeprefix("local-dir:").rstrip("/")
    return (
        f"model.name: {name}: amalgam builds the network from the folder's config.json, not its weights (timm's"
        f" pretrained=False): set the teacher's checkpoint to {folder}/model.safetensors or"
        f" {folder}/pytorch_model.bin, whichever the folder holds"
    )


MODEL_SOURCES.add(
    "timm",
    ModelSource(_timm_build, _timm_check, _random_weights("timm's pretrained=False"), _timm_weights_unread),
)
MODEL_SOURCES.add("smp", ModelSource(_smp_build, _smp_check, _random_weights("smp's encoder_weights=None")))
MODEL_SOURCES.add("torchscript", ModelSource(_torchscript_build, _torchscript_check, lambda kwargs: ""))
MODEL_SOURCES.add("python", ModelSource(_python_build, _python_check))


def check_model(source: str, kwargs: dict, base: Path) -> None:
    """Validates a ``model:`` block without building it (raises AmalgamError naming the sub-key)."""
    MODEL_SOURCES.get(source).check(kwargs, base)


def build_model(source: str, kwargs: dict, base: Path) -> nn.Module:
    """Builds the network a ``model:`` block describes (random weights; see :func:`load_checkpoint`).
    A model arg naming a file relative to the recipe's folder is given as that file's absolute path:
    timm's ``checkpoint_path`` read it against the working directory, another file than the one hashed."""
    try:
        return MODEL_SOURCES.get(source).build(_files_resolved(kwargs, base), base)
    except AmalgamError:
        raise
    except Exception as exc:  # noqa: BLE001 - any constructor failure is the recipe's arguments or the user's code
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise AmalgamError(f"bad constructor arguments for {source} model: {first or type(exc).__name__}") from None


def _foreign_head(path: Path) -> Optional[bytes]:
    """The first bytes of a file that is neither a zip (torch.save's format) nor a pickle, else None."""
    with open(path, "rb") as f:
        head = f.read(8)
    return None if head.startswith((b"PK\x03\x04", b"\x80")) else head


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Reads a state dict from ``.pt``/``.pth`` (``weights_only=True``) or ``.safetensors``.

    Accepts the state dict itself or a dict holding it under ``state_dict`` or ``model``; strips
    DistributedDataParallel's ``module.`` prefix, and an AveragedModel's (its ``n_averaged`` left out).
    """
    return read_checkpoint(path)[0]


def read_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], str]:
    """:func:`read_state_dict` plus which entry of a wrapper it took, for the log ("" for a bare
    state dict), naming the wrapper's other state dicts (an ``ema`` beside ``model``), and whether
    DDP's ``module.`` prefix was stripped."""
    state, _, parts = _read_entry(path)
    return state, "; ".join(parts)


DDP_PREFIX = "module."
#: prefixes a wrapper puts before every key of the network it wraps, stripped and said: DDP's (an AveragedModel's
#: too) and torch.compile's, in either order (``torch.compile(DDP(model))`` saves ``_orig_mod.module.``)
STRIPPED_PREFIXES = {DDP_PREFIX: "DDP's", "_orig_mod.": "torch.compile's"}
#: torch.optim.swa_utils.AveragedModel (EMA, SWA; torchvision's ``model_ema``) saves its step count
#: beside the averaged network's weights, which it holds as ``module``
AVERAGED_COUNT = "n_averaged"


def _load_tensors(path: Path) -> Any:
    """A checkpoint file as saved: ``.safetensors``, or ``torch.load`` of tensors and plain containers only
    (nothing that runs code when unpickled) plus the ``argparse.Namespace`` of training arguments that timm's
    train.py saves beside its state dicts (a trial's standard timm checkpoint was refused as holding pickled
    objects)."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    with torch.serialization.safe_globals([argparse.Namespace]):
        return torch.load(path, map_location="cpu", weights_only=True)


def _read_entry(path: Path) -> tuple[dict[str, torch.Tensor], list[str], list[str]]:
    """:func:`read_checkpoint` plus where the state dict's keys were read: the entry's keys
    (``['state_dict']``; [] for a bare one), then ``module.`` if that prefix was stripped."""
    if path.is_dir():
        raise AmalgamError(f"checkpoint {path} is a folder, not a file: name the weights file in it")
    if not path.is_file():
        raise AmalgamError(f"checkpoint not found: {path}")
    _whole(path, "checkpoint")
    try:
        state = _load_tensors(path)
    except Exception as exc:  # noqa: BLE001 - truncated, foreign or unsafe pickles all land here
        if kind := _other_format(path):
            raise AmalgamError(f"cannot read checkpoint {path}: {kind}") from None
        head = _foreign_head(path) if path.suffix != ".safetensors" else None
        if head is not None:  # a saved error page, say; torch's own error on text is "101"
            raise AmalgamError(
                f"cannot read checkpoint {path}: it is not a PyTorch file (torch.save writes a zip or a pickle;"
                f" it begins {head!r})"
            ) from None
        if "Weights only load failed" in str(exc):
            raise AmalgamError(
                f"refusing checkpoint {path}: it holds pickled objects beyond tensors, and unpickling them can run"
                f' code. If you trust the file, convert it once: python -c "{conversion_command(path)}"'
                " and point the recipe at the .state.pt file"
            ) from None
        first = error_line(exc)
        raise AmalgamError(f"cannot read checkpoint {path}: {first}") from None
    wrapper, taken = state, []
    while (key := _wrapper_key(state)) is not None:  # nested either way: {model: {state_dict: ...}}
        state = state[key]
        taken.append(key)
    if not _is_state_dict(state):
        raise AmalgamError(f"checkpoint {path} does not hold a state dict of tensors{_state_dicts_inside(state, path)}")
    note = _entry_note(wrapper, taken)
    state, prefixes, stripped = _unwrapped(state)
    return state, [*taken, *prefixes], ([note] if note else []) + stripped


def _unwrapped(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str], list[str]]:
    """``state`` with the wrapper prefixes every key starts with stripped, outermost first
    (:data:`STRIPPED_PREFIXES`; an AveragedModel's step count left out), the prefixes and a note for each."""
    prefixes, notes = [], []
    while (prefix := _wrapper_prefix(state)) is not None:
        averaged = prefix == DDP_PREFIX and AVERAGED_COUNT in state
        state = {k if k == AVERAGED_COUNT else k[len(prefix) :]: v for k, v in state.items()}
        if averaged:
            del state[AVERAGED_COUNT]
        prefixes.append(prefix)
        notes.append(
            f"an AveragedModel's (EMA, SWA) weights: '{prefix}' prefix stripped from every key, {AVERAGED_COUNT}"
            " left out"
            if averaged
            else f"{STRIPPED_PREFIXES[prefix]} '{prefix}' prefix stripped from every key"
        )
    return state, prefixes, notes


def _wrapper_prefix(state: dict) -> Optional[str]:
    """The wrapper prefix every key of ``state`` starts with (an AveragedModel's step count aside), if any."""
    weights = [k for k in state if k != AVERAGED_COUNT]
    return next((p for p in STRIPPED_PREFIXES if weights and all(k.startswith(p) for k in weights)), None)


def _other_format(path: Path) -> Optional[str]:
    """What a checkpoint that failed to load is instead, where its bytes tell: a TorchScript archive
    (a model of its own, not a state dict), a safetensors file or a torch.save file under the other's
    suffix, or a zip cut short; None where they do not."""
    with open(path, "rb") as f:
        head = f.read(10)
    if head.startswith(b"PK\x03\x04"):
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except zipfile.BadZipFile:
            return "a zip (torch.save's format) that is cut short or damaged: copy or save it again"
        if any(n.endswith("/constants.pkl") or "/code/" in n for n in names):
            return "it is a TorchScript file, a model of its own: give it as model: {from: torchscript, path: ...}"
        if path.suffix == ".safetensors":
            return "it is a torch.save file named .safetensors: name it .pt"
    if path.suffix != ".safetensors" and len(head) == 10 and head[8:10] == b'{"':  # 8-byte header length, JSON
        return "it is a safetensors file: name it .safetensors"
    if path.suffix == ".safetensors" and head.startswith(b"\x80"):
        return "it is a torch.save file (a pickle) named .safetensors: name it .pt"
    return None


def _is_state_dict(value: Any) -> bool:
    return isinstance(value, dict) and all(isinstance(v, torch.Tensor) for v in value.values())


#: the entries a checkpoint wrapper's state dict is read from, the first that holds one: Lightning's and
#: most trainers', then PyTorch's own tutorial's (``{"model_state_dict", "optimizer_state_dict", "epoch"}``)
WRAPPER_ENTRIES = ("state_dict", "model", "model_state_dict")
ENTRY_RULE = "state_dict, else model, else model_state_dict, is read"


def _wrapper_key(state: Any) -> Optional[str]:
    """The entry a wrapper holds its state dict under (:data:`WRAPPER_ENTRIES`), if any: one
    holding a state dict, at once or nested, not a ``model`` entry of hyper-parameters beside the weights."""
    if not isinstance(state, dict) or _is_state_dict(state):
        return None
    held = (k for k in WRAPPER_ENTRIES if isinstance(v := state.get(k), dict) and _holds_weights(v))
    return next(held, None)


def _holds_weights(value: dict) -> bool:
    return (_is_state_dict(value) and len(value) > 0) or _wrapper_key(value) is not None


def _entry_note(wrapper: Any, taken: list[str]) -> str:
    if not taken:
        return ""
    others = [k for k in _state_dict_entries(wrapper) if k != taken[0]]
    also = f"; it also holds state dicts under: {', '.join(others)}" if others else ""
    return f"entry '{'.'.join(taken)}' ({ENTRY_RULE}){also}"


def _state_dicts_inside(state: Any, path: Optional[Path] = None) -> str:
    """The entries of a wrapper that hold state dicts (``model_state_dict``, ``ema``), so that the
    user can re-save the one meant: amalgam reads only :data:`WRAPPER_ENTRIES` (never guesses)."""
    found = _state_dict_entries(state)
    named = " / ".join(WRAPPER_ENTRIES)
    if not found:
        return ""
    fix = ""
    if path is not None:  # the one command that makes the entry meant a file amalgam reads
        fix = (
            f"; to use '{found[0]}': python -c \"import torch; s = torch.load({str(path)!r}, weights_only=True);"
            f' torch.save(s[{found[0]!r}], {str(path.with_suffix(".state.pt"))!r})" and point the recipe at that file'
        )
    return f" at its top or under {named} (state dicts under: {', '.join(found)}){fix}"


def _state_dict_entries(state: Any) -> list[str]:
    """The entries of a checkpoint dict that are themselves dicts of tensors."""
    if not isinstance(state, dict):
        return []
    return [str(k) for k, v in state.items() if _is_state_dict(v) and len(v) > 0]


def _shared_prefix_hint(state: dict, own: dict, path: Path, taken: list[str]) -> str:
    """How to fix a checkpoint whose keys for this network carry one extra first name (a Lightning
    module's ``model.``), beside other parts or not (its ``ema_model.``, a loss's buffers): said, not
    stripped, since only the user knows that entry is this network. The command keeps and strips the
    keys under that name in the entry read (``taken``: ``['state_dict']`` for Lightning, see
    :func:`_read_entry`), DDP's prefix included."""
    firsts = dict.fromkeys(k.split(".", 1)[0] for k in state if "." in k)
    fits = [prefix for n in firsts if (prefix := _fitting_prefix(state, f"{n}.", set(own)))]
    if not fits:
        return ""
    prefix = fits[0]  # the command's; every fitting one is named, so that the user picks (model. or ema.)
    out = f"{path}.inner.pt"
    entry = "".join(f"[{key!r}]" for key in taken if key not in STRIPPED_PREFIXES)
    wrappers = "".join(key for key in taken if key in STRIPPED_PREFIXES)  # in the order they were stripped
    cut = len(prefix) + len(wrappers)
    strip = (
        f"import torch; s = torch.load({str(path)!r}){entry}; torch.save({{k[{cut}:]: v for k, v in s.items()"
        f" if k.startswith({wrappers + prefix!r})}}, {out!r})"
    )
    others = [f"{n}." for n in firsts if not prefix.startswith(f"{n}.")] + (
        ["keys of no prefix"] if any("." not in k for k in state) else []
    )
    beside = f" (beside {', '.join(others[:4])})" if others else ""
    said = (
        f"every checkpoint key starts with '{prefix}', which the model's keys do not"
        if not others
        else f"the network's keys are those under '{prefix}'{beside}, which the model's keys do not start with"
    )
    if len(fits) > 1:  # two copies of the network (its weights and their EMA): amalgam does not choose
        said = f"the model's keys are found under each of {', '.join(repr(f) for f in fits)}, the model's own"
        return (
            f" ({said} do not have them: amalgam does not choose between two copies of the network; save the one"
            f' meant as a state_dict, e.g. python -c "{strip}" (for {prefix!r}), and point the recipe at {out})'
        )
    return (
        f" ({said}: save the inner network's state_dict,"
        f' e.g. python -c "{strip}" (for {prefix!r}), and point the recipe at {out})'
    )


#: wrappers whose prefix may follow another's: ``torch.compile(DDP(model))`` saves ``_orig_mod.module.``
WRAPPER_PREFIXES = ("module.", "_orig_mod.")


def _fitting_prefix(state: dict, prefix: str, own: set) -> str:
    """``prefix``, with the wrapper prefixes under it, where the keys under it are the model's; else ""."""
    for _ in range(len(WRAPPER_PREFIXES) + 1):
        under = {k[len(prefix) :] for k in state if k.startswith(prefix)}
        if under == own:
            return prefix
        inner = next((w for w in WRAPPER_PREFIXES if under and all(k.startswith(w) for k in under)), None)
        if inner is None:
            return ""
        prefix += inner
    return ""


def conversion_command(path: Path) -> str:
    """Python that saves the state dict of a pickled checkpoint as ``<path>.state.pt``: a whole
    module, or a dict holding one (or its state dict) under ``state_dict``/``model_state_dict``/
    ``model``/``ema``/``net`` beside epochs, optimisers and hyper-parameters (Lightning's layout).
    Only tensors are kept; it prints the entry it took and the others, and fails if none is left."""
    src, out = str(path), f"{path}.state.pt"
    return (
        f"import torch; c = torch.load({src!r}, weights_only=False); d = c if isinstance(c, dict) else {{}};"
        " held = [k for k in d if isinstance(d[k], (dict, torch.nn.Module))];"
        " k = next((k for k in ('state_dict', 'model_state_dict', 'model', 'ema', 'net') if k in held), None);"
        " m = c if k is None else c[k]; m = m.state_dict() if isinstance(m, torch.nn.Module) else m;"
        " sd = {n: v for n, v in m.items() if isinstance(v, torch.Tensor)};"
        " assert sd, f'no tensors at the top or under one entry of: {held}';"
        f" torch.save(sd, {out!r});"
        " print(f'saved {len(sd)} tensors from entry {k!r} (others: {[h for h in held if h != k]}) to',"
        f" {out!r})"
    )


def load_checkpoint(model: nn.Module, path: Path, who: str, model_key: str = "", kwargs: Optional[dict] = None) -> str:
    """Loads a checkpoint strictly, naming the first mismatched key if it does not fit.

    Args:
        model: the freshly built network.
        path: the checkpoint file.
        who: the owner named in errors, e.g. ``teacher 'seg-a'``.
        model_key: the recipe key that built it (``teachers.seg-a.model``), named with a head of another
            size; ``kwargs``: the arguments it was built with.

    Returns:
        Which entry of a wrapper was loaded, for the log (see :func:`read_checkpoint`; "" if none).
    """
    try:
        state, taken, parts = _read_entry(path)
    except AmalgamError as exc:
        raise AmalgamError(f"{who}: {exc}") from None  # which teacher's file it is
    own = model.state_dict()
    state, parts = _own_prefixes_back(own, state, [p for p in taken if p in STRIPPED_PREFIXES], parts)
    note = "; ".join(parts)
    missing = _missing(own, state)
    if missing:
        count = f"; {len(missing)} keys are missing" if len(missing) > 1 else ""
        hint = (_shared_prefix_hint(state, own, path, taken) or _aux_hint(missing, saved=False)) + count
        raise AmalgamError(f"{who}: checkpoint {path} does not fit the model: missing key '{missing[0]}'{hint}")
    differing = [key for key, value in own.items() if key in state and tuple(state[key].shape) != tuple(value.shape)]
    if differing:
        key, saved, built = differing[0], state[differing[0]].shape, own[differing[0]].shape
        raise AmalgamError(
            f"{who}: checkpoint {path} does not fit the model: key '{key}' has shape {list(saved)} in the checkpoint,"
            f" {list(built)} in the model"
            + _head_hint(key, own, saved, model_key, kwargs or {})
            + (_position_hint(key, saved, built, model_key) if len(differing) == 1 else "")
        )
    extra = [k for k in state if k not in own]
    if extra:
        hint = _aux_hint(extra, saved=True)
        raise AmalgamError(f"{who}: checkpoint {path} does not fit the model: unexpected key '{extra[0]}'{hint}")
    state = {**{k: torch.zeros((), dtype=torch.long) for k in own if k not in state}, **state}  # step counts only
    model.load_state_dict(state)
    return note


#: torchvision's auxiliary heads: their keys' first names, the builder arg that keeps them, and whether that arg
#: defaults to true without weights (googlenet's and inception_v3's ``aux_logits``; the segmenters' ``aux_loss``)
AUX_HEADS = ((("aux_classifier.",), "aux_loss", False), (("aux1.", "aux2.", "AuxLogits."), "aux_logits", True))


def _own_prefixes_back(
    own: dict, state: dict, stripped: list[str], parts: list[str]
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """``state`` with the innermost of the ``stripped`` prefixes put back where the model's own keys start with them
    (its child is named ``module``, or it is compiled itself: the file was saved plainly), and the notes of the
    prefixes put back (the last of ``parts``) left out."""
    if not own or not _missing(own, state):
        return state, parts
    for n in range(1, len(stripped) + 1):
        back = "".join(stripped[-n:])
        if all(k.startswith(back) for k in own):
            return {back + k: v for k, v in state.items()}, parts[:-n]
    return state, parts


def _aux_hint(keys: list[str], saved: bool) -> str:
    """The fix where the keys a checkpoint has beyond the model's (``saved``) or lacks are a torchvision auxiliary
    head's: the builder arg that keeps it (:data:`AUX_HEADS`)."""
    for firsts, arg, default in AUX_HEADS:
        if all(k.startswith(firsts) for k in keys):
            fix = f"set model.{arg}: {'true' if saved else 'false'}"
            fix = fix if saved or default else f"leave out model.{arg}, or set it false"
            return f" (a torchvision model saved {'with' if saved else 'without'} its auxiliary head: {fix})"
    return ""


def _missing(own: dict, state: dict) -> list[str]:
    """The model's keys ``state`` lacks; torch fills in a BatchNorm's step count, which older checkpoints and
    conversions leave out."""
    return [k for k in own if k not in state and not k.endswith("num_batches_tracked")]


#: the arguments a model's number of outputs usually goes by (torchvision, timm, smp, HF-style)
COUNT_ARGS = ("num_classes", "classes", "n_classes", "num_labels", "out_channels", "out_classes")


def _head_hint(key: str, own: dict, saved: torch.Size, model_key: str, kwargs: dict) -> str:
    """Where the mismatch is the model's last layer in its number of outputs only: the model was built for
    another number of classes than the checkpoint holds, said with the argument that sets it (a trial read
    "key '13.weight' has shape [7, 64]" with no word of num_classes)."""
    weights = [k for k, v in own.items() if v.is_floating_point() and k.rsplit(".", 1)[-1] in ("weight", "bias")]
    built = own[key].shape
    if key not in weights[-2:] or len(saved) != len(built) or saved[1:] != built[1:]:
        return ""
    args = [a for a in COUNT_ARGS if a in kwargs]
    where = f"{model_key}.{args[0]}" if args and model_key else f"its number of outputs in {model_key or 'the model'}"
    return f" (its last layer: {saved[0]} outputs in the checkpoint, {built[0]} built: set {where} to {saved[0]})"


#: the last names of a vision transformer's position embedding (timm, torchvision, HF), sized by its input
POSITION_EMBEDDINGS = ("pos_embed", "pos_embedding", "position_embeddings", "absolute_pos_embed")


def _position_hint(key: str, saved: torch.Size, built: torch.Size, model_key: str) -> str:
    """Where the mismatch is a transformer's position embedding in its number of positions only: the network was
    built for another input size than the checkpoint's (a trial read "key 'pos_embed' has shape [1, 17, 192]")."""
    if key.rsplit(".", 1)[-1] not in POSITION_EMBEDDINGS or len(saved) != len(built) or len(saved) < 2:
        return ""
    if (*saved[:-2], saved[-1]) != (*built[:-2], built[-1]):  # only the positions (second to last) may differ
        return ""
    where = f"set {model_key}.img_size (timm; torchvision's image_size)" if model_key else "set its input size"
    return (
        f" (its position embedding, the only weight of another shape: {saved[-2]} positions in the checkpoint,"
        f" {built[-2]} built, so the network was built for another input size than it was trained at: {where} to"
        " the size it was trained at)"
    )


def unloaded_note(source: str, kwargs: dict, base: Optional[Path] = None, model: Optional[nn.Module] = None) -> str:
    """What a teacher of ``model.from: source`` built without ``checkpoint`` runs with, for the log.

    With ``base`` (the recipe's folder), a model arg naming a file there (``weights: w.pt``, timm's
    ``checkpoint_path``) is said as where its weights come from: the source's own note called a
    ``MyNet.from_pretrained(path)`` teacher random. With the built ``model`` a weights file is checked
    against it (:func:`args_weights_held`): one it holds none of stops, as the recipe says a load that
    did not happen; one it cannot be compared with is said unchecked."""
    note = MODEL_SOURCES.get(source).unloaded(kwargs)
    files = file_kwargs(kwargs, base) if base is not None and note else {}
    if base is not None and not files and (unread := MODEL_SOURCES.get(source).weights_unread(kwargs)):
        raise AmalgamError(unread)
    loader = "the factory" if source == "python" else source
    held = args_weights_held(model, files) if model is not None else {}
    if unloaded := [key for key, ok in held.items() if ok is False]:
        raise AmalgamError(
            f"model.{unloaded[0]} names weights ({files[unloaded[0]][0]}) the built model holds none of: {loader}"
            " did not load them, and the teacher would run with its own random weights. Give the file as the"
            " teacher's checkpoint: (amalgam loads and checks it), or load it in the factory"
        )
    named = "; ".join(f"model.{key}: {value}" for key, (value, _) in files.items())
    if not any(held.values()) and model is not None and base is not None and (files or source == "python"):
        if drawn := _draws_anew(model, source, kwargs, base):  # a label list or a config among the args
            said, _, why = note.partition(f" {RANDOM}")
            why = why[:-1] if why else drawn
            among = f"; {named}: files among its model args, none found holding its weights" if files else ""
            return f"{said} {RANDOM}{why}{among})"
    if not files:
        return note
    checked = "the model holds its weights" if held and all(held.values()) else "not compared with the model"
    return f"none: weights loaded by {loader} from {named} (a file among its model args; {checked})"


def file_kwargs(kwargs: dict, base: Optional[Path]) -> dict[str, tuple[str, Path]]:
    """``{dotted model arg: (its value as written, the file)}`` for every model arg, nested ones
    (``pretrained_cfg_overlay.file``) included, whose string value names an existing file, relative
    to ``base`` (the recipe's folder) or absolute: weights a factory loads itself, which the teacher
    cache must key by (teachers/fingerprint.py). ``factory`` names code, hashed apart."""
    found: dict[str, tuple[str, Path]] = {}
    for key, value in _leaves(kwargs):
        if key == "factory" or not isinstance(value, str) or not value.strip():
            continue
        try:
            path = _resolve(value, base) if base is not None else expand_path(value)
            if path.is_file():
                found[key] = (value, path)
        except (OSError, ValueError, AmalgamError):  # a name too long, holding NUL or an unset $VAR: no file
            continue
    return found


def _draws_anew(model: nn.Module, source: str, kwargs: dict, base: Path) -> str:
    """How much of its weights the model's source draws at random, said ("" if none): a second build under
    another seed holds other values where it does (one that loads pretrained weights itself holds the same;
    a fresh head on a pretrained body is named). Only the CPU generator is reseeded, inside a fork: the
    caller's random streams are left as they were."""
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(torch.initial_seed() + 1)
        try:
            other = build_model(source, kwargs, base)
        except Exception:  # noqa: BLE001 - a factory that builds once only: the first build stands, unjudged
            return ""
    own = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    again = {k: v.detach().cpu() for k, v in other.state_dict().items()}
    del other  # a large model: not held twice beyond this check
    # a tensor one constant in both builds (batch norm's fresh ones and zeros) says nothing of pretraining
    floats = [
        k
        for k, v in own.items()
        if v.is_floating_point() and v.numel() > 1 and k in again and not (_constant(v) and _same(v, again[k]))
    ]
    drawn = [k for k in floats if again[k].shape == own[k].shape and not _same(own[k], again[k])]
    if not drawn:
        return ""
    loader = "the factory" if source == "python" else source
    if len(drawn) == len(floats):
        return f"two builds of {loader} hold different weights"
    names = ", ".join(f"'{k}'" for k in drawn[:3]) + (", ..." if len(drawn) > 3 else "")
    return f"two builds of {loader} differ in {len(drawn)} of its {len(floats)}{SOME_DRAWN}{names}"


def _constant(t: torch.Tensor) -> bool:
    """Whether every value of ``t`` is its first (a layer's initial ones or zeros)."""
    return bool((t == t.flatten()[0]).all())


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal values, NaN where the other has NaN too (a loaded tensor holding NaN is not drawn anew)."""
    return bool(torch.isclose(a, b, rtol=0, atol=0, equal_nan=True).all())


def _files_resolved(kwargs: dict, base: Path) -> dict:
    """``kwargs`` with each relative value :func:`file_kwargs` finds replaced by its absolute path."""
    files = {key: path for key, (value, path) in file_kwargs(kwargs, base).items() if not Path(value).is_absolute()}
    if not files:
        return kwargs

    def swap(value: Any, key: str = "") -> Any:
        if key in files:
            return str(files[key].resolve())
        if isinstance(value, dict):
            return {k: swap(v, f"{key}.{k}" if key else str(k)) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return type(value)(swap(v, f"{key}.{i}" if key else str(i)) for i, v in enumerate(value))
        return value

    return swap(kwargs)


def args_weights_held(model: nn.Module, files: dict[str, tuple[str, Path]]) -> dict[str, Optional[bool]]:
    """Per model arg naming a file (:func:`file_kwargs`): True where the built model holds at least one
    of the file's tensors, False where it holds none of them under the same names and shapes (the factory
    did not load it: a ``checkpoint:`` written inside ``model:``, timm's ``pretrained_cfg_overlay.file``
    with ``pretrained=False``), None where it cannot tell (not a state dict, or no name in common)."""
    own = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    found: dict[str, Optional[bool]] = {}
    for key, (_, path) in files.items():
        verdicts = [_holds(own, state) for state in _every_state_dict(path)]
        found[key] = True if True in verdicts else False if False in verdicts else None
    return found


def _every_state_dict(path: Path) -> list[dict[str, torch.Tensor]]:
    """Every state dict the file holds, read once: itself, or each entry that is one (``state_dict`` and timm's
    ``state_dict_ema``, which its ``checkpoint_path`` loads first), each with DDP's prefix stripped too; [] for a
    file that holds none (a config, a tokenizer: nothing to check)."""
    try:
        raw = _load_tensors(path)
    except Exception:  # noqa: BLE001 - not a weights file
        return []
    tops = [raw] if _is_state_dict(raw) else [raw[e] for e in _state_dict_entries(raw)]
    return [variant for top in tops for variant in (top, _unwrapped(top)[0])]


def _holds(own: dict[str, torch.Tensor], state: dict[str, torch.Tensor]) -> Optional[bool]:
    """Whether the model holds at least one of ``state``'s float tensors (None: no name and shape in common)."""
    common = [k for k, v in state.items() if k in own and v.shape == own[k].shape and v.is_floating_point()]
    common = [k for k in common if own[k].is_floating_point() and own[k].numel() > 1]
    if not common:
        return None
    return any(torch.equal(own[k], state[k].to(own[k].dtype)) for k in common)


def _leaves(value: Any, key: str = "") -> list[tuple[str, Any]]:
    """``(dotted key, value)`` of every non-container value of nested dicts and lists."""
    if isinstance(value, dict):
        children = [(str(k), v) for k, v in value.items()]
    elif isinstance(value, (list, tuple)):
        children = [(str(i), v) for i, v in enumerate(value)]
    else:
        return [(key, value)]
    return [leaf for k, v in children for leaf in _leaves(v, f"{key}.{k}" if key else k)]
