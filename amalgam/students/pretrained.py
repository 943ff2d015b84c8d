"""A student encoder started from pretrained weights (``student.encoder_weights``).

Real students start from a backbone pretrained elsewhere (ImageNet weights, or a backbone trained
on the user's own images); amalgamation then only has to teach the tasks, not the features.
The file may hold the encoder's own state dict, a whole smp model's (``encoder.*``) or a
classifier's (a timm model for a ``tu-*`` encoder, a torchvision ResNet for ``resnet*``).

Matching rule (said in the build log and by ``amalgam inspect``): the checkpoint's keys are renamed
by the first of :data:`RENAMES` under which **every** tensor of the encoder is found with its
shape; the checkpoint's other tensors (a classifier's head) are left out and counted. No rename
fitting every tensor is an error naming the closest one: a half-loaded encoder is never used. Nor
is one whose file holds more of its own modules (``layer1.2.*`` of a ResNet-34 into a ResNet-18,
whose ``layer1`` has two blocks): each kept block was trained to feed a block that is not there.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional

import torch
from torch import nn

from amalgam.errors import AmalgamError, RecipeError
from amalgam.students.encoders import build_encoder
from amalgam.teachers.model_sources import read_checkpoint

KEY = "student.encoder_weights"

#: (prefix stripped from the checkpoint's keys, prefix added, flatten), tried in this order; flatten
#: renames a leading ``blocks.N.`` to ``blocks_N.``, as timm's feature-list encoders name a classifier's
#: sequential children (smp's ``tu-repghostnet_*`` for example)
RENAMES: tuple[tuple[str, str, bool], ...] = (
    ("", "", False),  # the encoder's own state dict (or a torchvision ResNet for smp's resnet*)
    ("encoder.", "", False),  # a whole smp model
    ("", "model.", False),  # a timm model, for smp's tu-* encoders (they wrap it as .model)
    ("", "model.", True),  # the same, for timm encoders that flatten their blocks
    ("encoder.", "model.", False),
    ("backbone.", "", False),
    ("backbone.", "model.", False),
    ("model.", "", False),  # a torchvision network saved inside a wrapper (Lightning's self.model), for smp's own
    # a timm model saved inside a wrapper (Lightning's self.model, an smp model, a backbone), blocks flattened
    ("model.", "model.", True),
    ("encoder.", "model.", True),
    ("backbone.", "model.", True),
)
#: buffers a checkpoint may lack (torch treats them as optional; published weights often omit them)
OPTIONAL = ("num_batches_tracked",)


@dataclass
class EncoderWeights:
    """An encoder's state dict taken from a checkpoint, and how it was matched."""

    state: dict[str, torch.Tensor]
    path: Path
    rename: tuple[str, str, bool]
    unused: list[str]  # checkpoint keys no encoder tensor took (e.g. a classifier head)
    #: which entry of a wrapper was read, the others beside it (an EMA), a prefix stripped ("": a bare state dict)
    note: str = ""

    def describe(self) -> str:
        """One line for the build log and ``inspect``."""
        strip, add, flat = self.rename
        how = "names as they are" if self.rename == ("", "", False) else f"'{strip}' -> '{add}' in front of each name"
        how += ", blocks.N. -> blocks_N." if flat else ""
        left = f"; left out {len(self.unused)} tensors ({', '.join(self.unused[:3])}{', ...' * (len(self.unused) > 3)})"
        entry = f"; {self.note}" if self.note else ""
        return f"{len(self.state)} encoder tensors from {self.path} ({how}){entry}{left if self.unused else ''}"


def _fresh(encoder_name: str, args: Optional[Mapping[str, Any]] = None) -> nn.Module:
    """A new encoder, built without moving the global random stream (a seeded build stays as it was)."""
    with torch.random.fork_rng(devices=[]):
        return build_encoder(encoder_name, args)


def _renamed(state: dict[str, torch.Tensor], strip: str, add: str, flat: bool) -> dict[str, str]:
    """Encoder key -> checkpoint key, for the checkpoint keys starting with ``strip``."""
    names = {}
    for k in state:
        if k.startswith(strip):
            rest = k[len(strip) :]
            names[add + (re.sub(r"^(\w+)\.(\d+)\.", r"\1_\2.", rest) if flat else rest)] = k
    return names


def _fits(own: dict[str, torch.Tensor], state: dict[str, torch.Tensor], names: dict[str, str]) -> list[str]:
    """The encoder keys this renaming does not supply with the right shape (empty: it fits)."""
    return [
        k
        for k, v in own.items()
        if (k not in names and not k.endswith(OPTIONAL))
        or (k in names and tuple(state[names[k]].shape) != tuple(v.shape) and k != _grey_stem(own, state, names))
    ]


def _grey_stem(own: dict[str, torch.Tensor], state: dict[str, torch.Tensor], names: dict[str, str]) -> Optional[str]:
    """The encoder's first convolution where the file's takes one channel and the encoder's RGB (a network
    pretrained on grey images, or on another one-channel signal), else None: spread over R, G and B, a third
    each, it answers grey images (amalgam feeds them as R = G = B) as it did, the rule timm follows for
    ``in_chans`` (a trial's grey ResNet was refused). Only the first: a later convolution of one channel
    against three is another network."""
    stem = next((k for k, v in own.items() if v.dim() == 4), None)
    if stem is None or stem not in names:
        return None
    found, want = state[names[stem]], own[stem]
    grey = found.dim() == 4 and found.shape[1] == 1 and want.shape[1] == 3
    return stem if grey and found.shape[0] == want.shape[0] and found.shape[2:] == want.shape[2:] else None


def _taken(own: dict[str, torch.Tensor], state: dict[str, torch.Tensor], names: dict[str, str]) -> dict:
    """The checkpoint's tensors as the encoder takes them (a one-channel first convolution spread over R, G
    and B), by encoder key."""
    stem = _grey_stem(own, state, names)
    return {k: state[names[k]].repeat(1, 3, 1, 1) / 3 if k == stem else state[names[k]] for k in own if k in names}


def _grey_note(own: dict[str, torch.Tensor], state: dict[str, torch.Tensor], names: dict[str, str]) -> str:
    """What the build log says of a one-channel first convolution spread over R, G and B ('' where none)."""
    if (stem := _grey_stem(own, state, names)) is None:
        return ""
    return f"{names[stem]}: a one-channel first convolution (grey-pretrained?), spread over R, G and B (a third each)"


def match_encoder_weights(encoder_name: str, path: Path, args: Optional[Mapping[str, Any]] = None) -> EncoderWeights:
    """The state dict for encoder ``encoder_name`` (built with ``student.encoder_args`` ``args``) out
    of the checkpoint at ``path``.

    Raises:
        RecipeError: naming ``student.encoder_weights``, for an unreadable file or when no renaming
            of :data:`RENAMES` supplies every encoder tensor.
    """
    try:
        state, note = read_checkpoint(path)
    except AmalgamError as exc:
        raise RecipeError(KEY, str(exc)) from None
    encoder = _fresh(encoder_name, args)
    own = encoder.state_dict()
    best, named = None, False
    for rename in RENAMES:
        names = _renamed(state, *rename)
        named = named or any(k in names for k in own)  # some name found, if of another shape
        missing = _fits(own, state, names)
        if not missing:
            used = {names[k] for k in own if k in names}
            found = _taken(own, state, names)
            if inside := inside_encoder([k for k, v in names.items() if v not in used], encoder):
                raise RecipeError(KEY, _deeper(path, encoder_name, inside, [names[k] for k in inside]))
            said = "; ".join(part for part in (note, _grey_note(own, state, names)) if part)
            return EncoderWeights(found, path, rename, [k for k in state if k not in used], said)
        absent = [k for k in missing if k not in names]  # by name first: a width mismatch finds every name
        if best is None or (len(absent), len(missing)) < (len(best[2]), len(best[1])):
            best = (rename, missing, absent, names)
    (strip, add, _), missing, absent, names = best
    closest = (
        _closest(strip, add, missing, absent, own, state, names)
        if named
        else f"no renaming supplies any of its {len(own)} tensors (its first: '{next(iter(own))}'; the file's first:"
        f" '{next(iter(state), '')}')"
    )
    tried = ", ".join(f"{s!r}->{a!r}" + (" flattened" if f else "") for s, a, f in RENAMES)
    raise RecipeError(
        KEY,
        f"{path} does not fit encoder '{encoder_name}'{f' with student.encoder_args {dict(args)}' if args else ''}:"
        f" {closest}, renamings tried: {tried}",
    )


def _closest(strip: str, add: str, missing: list, absent: list, own: dict, state: dict, names: dict) -> str:
    """What the renaming that finds the most names lacks: names, or (every name found) shapes, the first named
    with both sizes (a narrower file read "misses 70 of its 84 tensors" under another renaming)."""
    said = f"the closest renaming ('{strip}' -> '{add}')"
    if absent:
        return f"{said} misses {len(absent)} of its {len(own)} tensors by name (first: '{absent[0]}')"
    first = missing[0]
    return (
        f"{said} finds every name, but {len(missing)} of its {len(own)} tensors have another shape (first:"
        f" '{names[first]}' {list(state[names[first]].shape)} in the file, {list(own[first].shape)} in the encoder:"
        " another width or depth? check student.encoder_args)"
    )


def inside_encoder(names: list[str], encoder: nn.Module) -> list[str]:
    """The tensor names (renamed into the encoder's) that would sit inside one of the encoder's own
    modules, below the root that holds all of them (smp's ``model.`` of a timm encoder): a deeper
    stage's extra blocks, not a classifier's head, which sits beside them."""
    modules = dict(encoder.named_modules())
    keys = list(encoder.state_dict())
    root = 0  # the components every encoder tensor's name starts with
    while keys and all(len(k.split(".")) > root + 1 for k in keys) and len({k.split(".")[root] for k in keys}) == 1:
        root += 1
    found = []
    for name in names:
        parts = name.split(".")[:-1]  # its module path
        depth = next((i for i in range(len(parts), 0, -1) if ".".join(parts[:i]) in modules), 0)
        if depth > root:
            found.append(name)
    return found


def _deeper(path: Path, encoder_name: str, inside: list[str], written: list[str]) -> str:
    shown = ", ".join(written[:3]) + (", ..." if len(written) > 3 else "")
    return (
        f"{path} fits encoder '{encoder_name}', but it holds {len(inside)} more tensors inside the encoder's own"
        f" modules ({shown}): a deeper or wider network of its family; loading part of it would start from a"
        f" broken network: give weights of '{encoder_name}' itself"
    )


def pretrained_encoder(
    encoder_name: str, weights: EncoderWeights, args: Optional[Mapping[str, Any]] = None
) -> nn.Module:
    """A fresh smp encoder (with ``student.encoder_args`` ``args``) holding ``weights`` (which the
    student then copies stage by stage)."""
    encoder = _fresh(encoder_name, args)
    # nn.Module's own: smp's encoders override load_state_dict (to drop a classifier head, which the match has
    # left out already), most returning None, MiT's without strict: each crashed here after inspect passed
    missing, unexpected = nn.Module.load_state_dict(encoder, weights.state, strict=False)
    if unexpected or any(not k.endswith(OPTIONAL) for k in missing):  # match_encoder_weights checked them
        raise AmalgamError(f"{KEY}: the matched weights do not fit '{encoder_name}' ({(unexpected + missing)[0]})")
    return encoder
