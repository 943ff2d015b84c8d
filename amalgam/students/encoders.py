"""Student encoders split into stages, so a branched student can share the first ones.

An smp encoder returns ``depth + 1`` feature maps (the input first). A :class:`StagedEncoder`
exposes the same computation as a list of stages, ``stage[k](feature[k]) = feature[k + 1]``.
A :class:`Splitter` is registered per encoder family (it says which encoders it takes and how it
cuts them); compact students use any smp encoder unsplit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Mapping, Optional

import segmentation_models_pytorch as smp
import torch
from torch import nn

from amalgam.errors import AmalgamError, RecipeError, error_line
from amalgam.registry import Registry


@dataclass(frozen=True)
class Splitter:
    """How to cut one family of smp encoders into five stages.

    Attributes:
        matches: whether an (unsplit) encoder belongs to the family; families do not overlap.
        split: the encoder -> its five stage modules (``stage[k](feature[k]) = feature[k + 1]``).
    """

    matches: Callable[[nn.Module], bool]
    split: Callable[[nn.Module], list[nn.Module]]


ARGS_KEY = "student.encoder_args"
#: smp's get_encoder sets these itself: as encoder_args they would clash or change the strides
RESERVED_ARGS = ("in_channels", "in_chans", "depth", "weights", "output_stride", "pretrained", "features_only")
#: why a student takes no channel count
RGB = (
    " (the student always takes RGB, grey images repeated as R = G = B; a grey-pretrained file's first"
    " convolution is spread over the three by student.encoder_weights)"
)
#: timm args of the classifier head, which a features-only encoder drops: as encoder_args they do nothing
HEAD_ARGS = ("num_classes", "global_pool")

#: family name -> :class:`Splitter`; a branched student uses the one whose ``matches`` takes its encoder
SPLITTERS: Registry[Splitter] = Registry("encoder splitter")


def build_encoder(name: str, args: Optional[Mapping[str, Any]] = None) -> nn.Module:
    """An smp encoder with random weights (pretrained weights are never downloaded).

    Args:
        name: an smp encoder name (``tu-<timm model>`` included).
        args: ``student.encoder_args``, keyword arguments for the encoder's constructor (a ``tu-*``
            encoder passes them to ``timm.create_model``: e.g. a ResNet's ``channels``).

    Raises:
        RecipeError: naming ``student.encoder_args`` for args an encoder cannot take: any for smp's own
            encoders (smp passes keyword arguments on to timm models only), smp's own keys
            (:data:`RESERVED_ARGS`), or args the constructor refuses.
    """
    if not args:
        try:
            return smp.encoders.get_encoder(name, in_channels=3, depth=5, weights=None)
        except Exception as exc:  # the name was checked: smp cannot make a U-Net encoder of this network
            raise _unbuildable(name, exc) from None
    _check_args(name, args)
    try:
        encoder = smp.encoders.get_encoder(name, in_channels=3, depth=5, weights=None, **dict(args))
    except Exception as exc:  # the args, unless the encoder is not built without them either (a trial's ViT)
        try:
            smp.encoders.get_encoder(name, in_channels=3, depth=5, weights=None)
        except Exception as plain:  # noqa: BLE001 - the encoder itself: said as without args
            raise _unbuildable(name, plain) from None
        raise RecipeError(ARGS_KEY, f"encoder '{name}' does not take {dict(args)}: {error_line(exc)}") from None
    _check_drop_rate(name, args, encoder)
    return encoder


def encoder_tag(name: str) -> Optional[str]:
    """The pretrained tag of a timm encoder name (``tu-resnet18.a1_in1k``: ``a1_in1k``), or None: a tag names
    weights to download, which a student never does."""
    return name.split(".", 1)[1] if name.startswith("tu-") and "." in name else None


def _unbuildable(name: str, exc: BaseException) -> RecipeError:
    """Why smp makes no U-Net encoder of ``name``: a pretrained tag it does not know, or a network without a
    feature pyramid."""
    if encoder_tag(name) is not None:  # read from the name, not from timm's message
        return RecipeError(
            "student.encoder",
            f"'{name}': {error_line(exc)}: a tag names pretrained weights, and a student starts from"
            " student.encoder_weights (a file: nothing is downloaded): leave the tag out",
        )
    return RecipeError(
        "student.encoder",
        f"smp cannot build a U-Net encoder of '{name}': {error_line(exc)} (a plain ViT, DeiT or LeViT has no"
        " feature pyramid, nor a net downsampling by 16 first): pick a CNN with a stride-2 stem (resnet*,"
        " tu-resnet*, tu-efficientnet_*, tu-mobilenetv3_*; a compact student also takes convnext and"
        " hierarchical transformers: tu-convnext_*, tu-swin_*, mit_b*)",
    )


def _check_args(name: str, args: Mapping[str, Any]) -> None:
    if not name.startswith("tu-"):
        raise RecipeError(
            ARGS_KEY, f"only tu-* (timm) encoders take arguments; smp's own '{name}' would ignore {dict(args)}"
        )
    reserved = [k for k in args if k in RESERVED_ARGS]
    if reserved:
        weights = " (weights are never downloaded: student.encoder_weights starts it from a file)"
        raise RecipeError(
            ARGS_KEY,
            f"{', '.join(reserved)}: set by amalgam (keys it keeps: {', '.join(RESERVED_ARGS)})"
            + (weights if {"pretrained", "weights"} & set(reserved) else "")
            + (RGB if {"in_channels", "in_chans"} & set(reserved) else ""),
        )
    head = [k for k in args if k in HEAD_ARGS]
    if head:
        said = "these set timm's classifier head, which an encoder does not keep"
        raise RecipeError(ARGS_KEY, f"{', '.join(head)}: {said}")


def _check_drop_rate(name: str, args: Mapping[str, Any], encoder: nn.Module) -> None:
    """Refuses a ``drop_rate`` the encoder does not use: most timm models apply it before the classifier only.

    It is used when a module below the feature net's root holds it (a Dropout of that p, or a ``drop_rate``
    attribute on a block, as some timm models keep one); the root's own copy is the head's.
    """
    rate = args.get("drop_rate")
    if not rate:
        return
    root = _timm_model(encoder) or encoder
    inner = (m for m in root.modules() if m is not root)
    if any((isinstance(m, nn.Dropout) and m.p == rate) or getattr(m, "drop_rate", None) == rate for m in inner):
        return
    raise RecipeError(
        ARGS_KEY,
        f"drop_rate: '{name}' applies it before its classifier, which an encoder does not keep, so it would do"
        " nothing (drop_path_rate, where a model takes it, regularises its blocks)",
    )


def _is_resnet(encoder: nn.Module) -> bool:
    from segmentation_models_pytorch.encoders.resnet import ResNetEncoder

    return isinstance(encoder, ResNetEncoder)


def _timm_model(encoder: nn.Module):
    """The timm feature net inside smp's universal encoder, or None (also for transformer-style ones)."""
    return None if getattr(encoder, "_is_transformer_style", False) else getattr(encoder, "model", None)


def _is_timm_feature_list(encoder: nn.Module) -> bool:
    from timm.models import FeatureListNet

    return isinstance(_timm_model(encoder), FeatureListNet)


def _is_timm_chain(encoder: nn.Module) -> bool:
    return hasattr(_timm_model(encoder), "feature_info") and not _is_timm_feature_list(encoder)


def _split_resnet(encoder: nn.Module) -> list[nn.Module]:
    return [
        nn.Sequential(encoder.conv1, encoder.bn1, encoder.relu),
        nn.Sequential(encoder.maxpool, encoder.layer1),
        encoder.layer2,
        encoder.layer3,
        encoder.layer4,
    ]


def _split_timm(encoder: nn.Module) -> list[nn.Module]:
    # timm's FeatureListNet runs its children in order and reads features after named modules.
    model = encoder.model
    names = model.feature_info.module_name()
    if len(names) != 5:
        raise AmalgamError("needs a timm encoder with 5 feature levels")
    stages, current = [], []
    for child_name, child in model.items():
        current.append(child)
        if child_name.replace(".", "_") in [n.replace(".", "_") for n in names]:
            stages.append(nn.Sequential(*current))
            current = []
    return stages


def _split_timm_chain(encoder: nn.Module) -> list[nn.Module]:
    """timm feature nets that are a chain of their modules (EfficientNetFeatures, MobileNetV3Features).

    Their ``feature_info`` names do not always mark where a feature is read (MobileNetV3's stem
    feature is named ``bn1`` but read after ``act1``), so the cuts are found by running the chain
    once and matching each of the encoder's own features, value for value.
    """
    if getattr(encoder, "_is_transformer_style", False):
        raise AmalgamError(_NO_STRIDE_2)
    chain = _flat_chain(encoder.model)
    was_training = encoder.training
    encoder.eval()
    with torch.no_grad():
        x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))  # the global stream stays put
        wanted = encoder(x)[1:]
        stages, current, level = [], [], 0
        for module in chain:
            current.append(module)
            x = module(x)
            if level < len(wanted) and x.shape == wanted[level].shape and torch.equal(x, wanted[level]):
                stages.append(nn.Sequential(*current))
                current, level = [], level + 1
    encoder.train(was_training)
    if level != 5 or current:
        raise AmalgamError(f"{type(encoder.model).__name__} is not a chain of its modules")
    return stages


#: why encoders whose stem downsamples by 4 cannot branch (kept beside the splitters that refuse them)
_NO_STRIDE_2 = (
    "its stem downsamples by 4 (no stride-2 feature, e.g. convnext, swin), and a U-Net student needs five stages"
    " at strides 2, 4, 8, 16 and 32"
)


def _flat_chain(model: nn.Module) -> list[nn.Module]:
    """The model's children in order, with sequential containers (``blocks``) opened one level."""
    chain = []
    for child in model.children():
        chain.extend(child.children() if type(child) is nn.Sequential else [child])
    return chain


SPLITTERS.add("resnet", Splitter(_is_resnet, _split_resnet))
SPLITTERS.add("timm-features", Splitter(_is_timm_feature_list, _split_timm))
SPLITTERS.add("timm-chain", Splitter(_is_timm_chain, _split_timm_chain))


def _splitter_for(encoder: nn.Module) -> Callable[[nn.Module], list[nn.Module]]:
    for name in SPLITTERS:
        if SPLITTERS.get(name).matches(encoder):
            return SPLITTERS.get(name).split
    if getattr(encoder, "_is_transformer_style", False):
        raise AmalgamError(
            f"student.encoder: a branched student cannot split {getattr(encoder, 'name', '')!r}: {_NO_STRIDE_2}"
            " (it takes resnet*, resnext*, tu-resnet*, tu-mobilenetv3_*, tu-efficientnet_* and other timm CNNs);"
            " use student.type: compact"
        )
    raise AmalgamError(
        f"student.encoder: a branched student needs an encoder that can be split into stages "
        f"(smp resnet*/resnext*, or tu-* timm CNNs, or a registered SPLITTERS family: {', '.join(SPLITTERS)});"
        f" '{type(encoder).__name__}' is not one: use student.type: compact"
    )


def split_stages(encoder: nn.Module, check: bool = True) -> list[nn.Module]:
    """The five stage modules of an smp encoder, by its family's registered splitter, checked (``check``)
    to compute the encoder's own features on a probe image (a family whose modules are not a chain,
    such as HRNet's parallel branches, splits into stages that fail or answer otherwise).

    Raises:
        AmalgamError: naming ``student.encoder`` and the compact student, when they do not.
    """
    split = _splitter_for(encoder)
    try:
        stages = split(encoder)
        problem = _stages_problem(encoder, stages) if check else None
    except AmalgamError as exc:
        if str(exc).startswith("student.encoder"):
            raise
        problem = str(exc)  # a splitter's own refusal (VGG's 6 feature levels): said with the key and the fix
    except Exception as exc:  # noqa: BLE001 - a splitter running modules that are not a chain (HRNet's)
        problem = error_line(exc)
    if problem:
        raise AmalgamError(
            f"student.encoder: a branched student cannot split {getattr(encoder, 'name', type(encoder).__name__)!r}"
            f" into five stages that compute its features ({problem}): use student.type: compact"
        )
    return stages


def _stages_problem(encoder: nn.Module, stages: list[nn.Module]) -> Optional[str]:
    """Why ``stages`` run in turn do not give the encoder's five features on a 64-px probe (None: they do)."""
    was_training = encoder.training
    encoder.eval()
    try:
        with torch.no_grad():
            x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))  # the global stream stays put
            wanted = encoder(x)[1:]
            for level, stage in enumerate(stages):
                x = stage(x)
                if x.shape != wanted[level].shape or not torch.allclose(x, wanted[level], atol=1e-5):
                    return f"stage {level + 1} gives {list(x.shape)}, the encoder {list(wanted[level].shape)}"
    except Exception as exc:  # noqa: BLE001 - any failure of the staged forward: it does not split
        return error_line(exc)
    finally:
        encoder.train(was_training)
    return None


class StagedEncoder(nn.Module):
    """An smp encoder as five stages; ``out_channels[k]`` is the width after stage k (0 = input)."""

    #: encoders (name, args) whose stages were checked once in this process: the tree search and every
    #: student load build the same one again, and its split does not change
    _checked: ClassVar[set[tuple[str, str]]] = set()

    def __init__(self, name: str, args: Optional[Mapping[str, Any]] = None):
        super().__init__()
        encoder = build_encoder(name, args)
        key = (name, repr(sorted(dict(args or {}).items())))
        self.stages = nn.ModuleList(split_stages(encoder, check=key not in StagedEncoder._checked))
        StagedEncoder._checked.add(key)
        self.out_channels = list(encoder.out_channels)

    def forward_range(self, x: torch.Tensor, start: int, stop: int) -> list[torch.Tensor]:
        """Runs stages ``start..stop-1`` on ``x`` (the feature entering stage ``start``)."""
        features = []
        for stage in self.stages[start:stop]:
            x = stage(x)
            features.append(x)
        return features
