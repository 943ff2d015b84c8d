"""Semantic recipe checks that need the registries (run right after schema validation)."""

from __future__ import annotations

from typing import Optional

from amalgam.config.ensembles import check_ensemble
from amalgam.config.label_entries import label_names, read_names, space_of
from amalgam.config.schema import PEERS_UNUSED_TRAIN_KEYS, InputSpec, Recipe, SourceConfig, TeacherConfig
from amalgam.data.image_set import COMMON_KEYS, SET_OPTIONS, SOURCE_TYPES
from amalgam.data.sources import BUILT_IN_TYPES
from amalgam.data.torchvision_sets import split_left_out
from amalgam.distill.features import FEATURE_TERMS
from amalgam.distill.weighting import TASK_WEIGHTINGS
from amalgam.errors import AmalgamError, RecipeError, count_of
from amalgam.kd import LOGIT_ENSEMBLES, PEER_STRATEGIES
from amalgam.plugin_contract import check_plugin
from amalgam.students.build import STUDENTS, has_branches, names_its_encoder
from amalgam.students.encoders import build_encoder, encoder_tag
from amalgam.task import TASKS, get_task, task_names
from amalgam.teachers.model_sources import check_encoder_name, check_model
from amalgam.teachers.subteachers import SUBTEACHERS, build_subteacher

STRIDE = 32  # the student's encoder downsamples 2^5 times


def at_key(path: str, check, *args):
    """Runs a check and returns what it returns, prefixing its error with ``path`` (sub-keys it names are appended)."""
    try:
        return check(*args)
    except RecipeError:
        raise
    except AmalgamError as exc:
        msg = str(exc)
        head, sep, rest = msg.partition(": ")
        if sep and " " not in head:  # the check named a sub-key
            raise RecipeError(f"{path}.{head}", rest) from None
        raise RecipeError(path, msg) from None


def check_recipe(recipe: Recipe) -> None:
    """Cross-key checks: names that must exist, per-type required keys, label sets, sizes."""
    check_sets(recipe)
    if recipe.peers is not None:
        check_peers(recipe)
        return
    if not recipe.teachers:
        raise RecipeError("teachers", "required: at least one teacher (or a peers section)")
    taught = set()
    for name, t in recipe.teachers.items():
        check_teacher_name(name)
        taught |= check_teacher(recipe, name, t)
    for s in recipe.data.sources:
        if s not in taught:
            raise RecipeError(f"data.sources.{s}", "no teacher teaches on this source")
    mixup = recipe.train.mixup
    for i, name in enumerate(mixup.sources if mixup else []):
        if name not in recipe.data.sources:
            raise RecipeError(
                f"train.mixup.sources.{i}",
                f"'{name}' is not a source (expected one of: {', '.join(recipe.data.sources)})",
            )
    at_key("student.type", STUDENTS.get, recipe.student.type)
    if recipe.student.encoder != "auto":  # auto: a rung of students/sizing.py's ladder, chosen at build
        at_key("student", check_encoder_name, recipe.student.encoder, "encoder")
    check_encoder_args(recipe)
    check_branch_at(recipe)
    check_task_decoders(recipe)
    check_student_start(recipe)
    h, w = recipe.data.image_size
    if (h % STRIDE or w % STRIDE) and (dense := dense_tasks(recipe)):
        raise RecipeError(
            "data.image_size",
            f"{[h, w]} must be divisible by the encoder's stride {STRIDE}: the decoders of {', '.join(dense)} double"
            " its deepest map back up (a student of classification alone takes any size)",
        )
    check_amalgamation(recipe)


def dense_tasks(recipe: Recipe) -> list[str]:
    """The recipe's dense tasks (decoders), sorted; tasks not installed are left to their own check."""
    known = set(task_names())
    return sorted({t.task for t in recipe.teachers.values() if t.task in known and get_task(t.task).dense})


def check_teacher_name(name: str) -> None:
    """A teacher's name keys the student's loss parameters (no '.') and its cache folder (no '/')."""
    bad = sorted({c for c in name if c in "./\\" or not c.isprintable()})
    if bad or not name or name != name.strip():
        fix = "".join("-" if c in bad else c for c in name.strip()) or "cls"
        shown = ", ".join(repr(c) for c in bad) or "blanks at its ends"
        why = "a teacher's name becomes a parameter and a folder name"
        raise RecipeError(f"teachers.{name}", f"{why}: {shown} cannot be in it (e.g. '{fix}')")


def check_encoder_args(recipe: Recipe) -> None:
    """``student.encoder_args`` go with a named encoder, and its constructor takes them."""
    s = recipe.student
    if not s.encoder_args:
        return
    if s.encoder == "auto":
        raise RecipeError(
            "student.encoder_args", "needs a named student.encoder (auto chooses among encoders the args may not fit)"
        )
    build_encoder(s.encoder, s.encoder_args)  # a RecipeError naming the key when the constructor refuses


def check_sets(recipe: Recipe) -> None:
    """Every source and eval set: a registered type, the keys it requires, a usable classes file."""
    task_names()  # imports the task plugins first: a plugin's module may register a source type it reads
    for group in ("sources", "eval"):
        for key, cfg in getattr(recipe.data, group).items():
            path = f"data.{group}.{key}"
            at_key(f"{path}.type", SOURCE_TYPES.get, cfg.type)
            for required in SOURCE_TYPES.get(cfg.type).required:
                if getattr(cfg, required) is None:
                    raise RecipeError(f"{path}.{required}", f"required for type '{cfg.type}'")
            check_set_options(path, cfg)
            if group == "eval" and cfg.type == "torchvision" and "split" not in cfg.model_fields_set:
                at_key(path, split_left_out, cfg.name)
            if group == "eval" and cfg.weight != type(cfg).model_fields["weight"].default:
                raise RecipeError(f"{path}.weight", "eval sets are scored whole, not sampled: weight is a source's")
            if cfg.flip != "auto" and (group == "eval" or not recipe.train.augment):
                why = "eval sets are never flipped" if group == "eval" else "train.augment is false: nothing is flipped"
                raise RecipeError(f"{path}.flip", why)
            if cfg.classes_file is not None:
                if not recipe.resolve(cfg.classes_file).is_file():
                    raise RecipeError(f"{path}.classes_file", f"file not found: {recipe.resolve(cfg.classes_file)}")


def check_set_options(path: str, cfg: SourceConfig) -> None:
    """An optional key set away from its default on a type that does not honour it would be ignored."""

    def honours(kind: str, option: str) -> bool:
        return option in SOURCE_TYPES.get(kind).options or option in SOURCE_TYPES.get(kind).required

    for option, (default, refusal) in SET_OPTIONS.items():
        if option in COMMON_KEYS and cfg.type not in BUILT_IN_TYPES:  # a plugin's type reads them as it likes
            continue
        if getattr(cfg, option) != default and not honours(cfg.type, option):
            kinds = " and ".join(n for n in SOURCE_TYPES.names() if honours(n, option))
            raise RecipeError(f"{path}.{option}", refusal.format(kinds=kinds, type=cfg.type))


def check_teacher(recipe: Recipe, name: str, t: TeacherConfig) -> set[str]:
    """One teacher's keys; returns the sources it teaches on."""
    path = f"teachers.{name}"
    if t.task not in task_names():
        if broken := TASKS.broken().get(t.task):  # an installed plugin that does not import: its own error
            raise RecipeError(f"{path}.task", broken)
        raise RecipeError(f"{path}.task", f"unknown task '{t.task}' (expected one of: {', '.join(TASKS.names())})")
    task = get_task(t.task)
    check_plugin(type(task))  # its hooks, before any training calls them
    at_key(f"{path}.model", check_model, t.model.source, t.model.kwargs(), recipe.base_dir)
    if task.labelled:
        check_teacher_labels(path, t, recipe)
    elif t.labels or t.labels_file or t.background:
        raise RecipeError(f"{path}.labels", f"a {t.task} teacher has no label space")
    elif t.unused_outputs:
        raise RecipeError(f"{path}.unused_outputs", f"a {t.task} teacher has no label channels to leave out")
    if task.labelled and t.output_scale is not None:  # logits times a number are another temperature
        raise RecipeError(f"{path}.output_scale", f"a {t.task} teacher's output is read by its labels, not in a unit")
    if t.output != "default" and t.output not in task.output_kinds:
        raise RecipeError(f"{path}.output", f"expected one of: {', '.join(task.output_kinds)}")
    taught = check_teacher_data(recipe, path, t)
    if t.checkpoint is not None and not recipe.resolve(t.checkpoint).is_file():
        raise RecipeError(f"{path}.checkpoint", f"file not found: {recipe.resolve(t.checkpoint)}")
    if t.wrap is not None:
        at_key(f"{path}.wrap.type", SUBTEACHERS.get, t.wrap.type)
        at_key(f"{path}.wrap", build_subteacher, t.wrap.type, t.wrap.kwargs())
    if problem := input_problem(t.input):
        raise RecipeError(f"{path}.input", problem)
    check_resize(name, t, task.dense, name in recipe.amalgamation.taps)
    return taught


def input_problem(spec: InputSpec) -> Optional[str]:
    """Why ``mean``/``std`` do not fit the channels or the scale images reach a network in, [0, 1].

    mmseg, mmpretrain and Caffe configs give them on the 0-255 scale: taken as they are, every
    input would be a near-constant -2 and the teacher would answer noise without a word.
    """
    if len(spec.mean) != spec.channels or len(spec.std) != spec.channels:
        example = ", ".join(["0.5"] * spec.channels)
        given = {len(spec.mean), len(spec.std)}
        n = given.pop() if len(given) == 1 else 0
        grey = (  # as many values for both, channels left at its default: most likely a grey network
            f"; a network of {count_of(n, 'input channel')}? set channels: {n}"
            if n and "channels" not in spec.model_fields_set
            else ""
        )
        return (
            f"mean and std need {count_of(spec.channels, 'value')} (channels: {spec.channels}), those it was trained"
            f" with (a default exists for 3 channels only, ImageNet's): e.g. mean: [{example}], std: [{example}]{grey}"
        )
    if min(spec.std) <= 0:  # a division by it: every input inf or NaN, then blamed on the checkpoint
        return f"std {spec.std} must be > 0 on every channel"
    if max(spec.mean) <= 1 and max(spec.std) <= 1:
        return None
    return (
        f"mean {spec.mean} and std {spec.std} are not on the [0, 1] scale images reach a teacher in;"
        " values from a 0-255 config (mmseg, mmpretrain, Caffe) divide by 255"
    )


def check_teacher_data(recipe: Recipe, path: str, t: TeacherConfig) -> set[str]:
    """The teacher's sources and eval set exist; returns the sources it teaches on."""
    for s in t.sources or recipe.data.sources:
        if s not in recipe.data.sources:
            raise RecipeError(
                f"{path}.sources", f"unknown source '{s}' (expected one of: {', '.join(recipe.data.sources)})"
            )
    if t.eval is not None and t.eval not in recipe.data.eval:
        raise RecipeError(
            f"{path}.eval",
            f"unknown eval set '{t.eval}' (expected one of: {', '.join(recipe.data.eval) or 'none defined'})",
        )
    return set(t.sources or recipe.data.sources)


def check_amalgamation(recipe: Recipe) -> None:
    """Taps name teachers, a feature term is registered and has taps, ensembles need no labels, weights name terms."""
    amal = recipe.amalgamation
    for teacher in amal.taps:
        if teacher not in recipe.teachers:
            raise RecipeError(f"amalgamation.taps.{teacher}", "not a teacher of this recipe")
    if amal.features != "none" and amal.features not in FEATURE_TERMS:
        raise RecipeError(
            "amalgamation.features",
            f"unknown feature term '{amal.features}' (expected one of: none, {', '.join(FEATURE_TERMS.names())})",
        )
    if amal.features != "none" and not amal.taps:
        raise RecipeError(
            "amalgamation.taps", f"required when features is '{amal.features}' ({{teacher: module.name}})"
        )
    if amal.ensemble is not None:
        at_key("amalgamation.ensemble.type", LOGIT_ENSEMBLES.get, amal.ensemble.type)
        if LOGIT_ENSEMBLES.get(amal.ensemble.type).needs_labels:
            raise RecipeError(
                "amalgamation.ensemble.type",
                f"'{amal.ensemble.type}' weighs teachers by their loss on labels; amalgamation has none",
            )
    if isinstance(amal.task_weights, str):
        at_key("amalgamation.task_weights", TASK_WEIGHTINGS.get, amal.task_weights)
    else:
        valid = set(recipe.teachers) | {t.task for t in recipe.teachers.values()}
        for key in amal.task_weights:
            if key not in valid:
                raise RecipeError(
                    f"amalgamation.task_weights.{key}", f"expected a task or teacher name ({', '.join(sorted(valid))})"
                )
    check_ensemble(recipe)  # after the weights' names: a group's weight comes from any of its teachers


def check_teacher_labels(path: str, t: TeacherConfig, recipe: Recipe) -> None:
    """A labelled teacher's ``labels`` (or ``labels_file``, read into ``labels`` here) and ``background``."""
    if t.labels_file is not None:
        file = recipe.resolve(t.labels_file)
        if not file.is_file():
            raise RecipeError(f"{path}.labels_file", f"file not found: {file}")
        names = at_key(f"{path}.labels_file", read_names, file)
        if t.labels and t.labels != names:  # a dumped recipe holds both, equal
            raise RecipeError(
                f"{path}.labels_file",
                "give labels or labels_file, not both (a variant or --set giving labels_file over its base's labels:"
                f" write {path}.labels: null beside it)",
            )
        t.labels = names
    if not t.labels:
        raise RecipeError(f"{path}.labels", f"required for a {t.task} teacher (its class names, in output order)")
    names = label_names_at(f"{path}.labels", t.labels)
    if problem := get_task(t.task).labels_problem(names):
        raise RecipeError(f"{path}.labels", problem)
    if t.background is not None and t.background not in names:
        raise RecipeError(f"{path}.background", f"'{t.background}' is not one of the teacher's labels")
    at_key(f"{path}.labels", space_of, t.labels, t.background)


def label_names_at(path: str, entries: list) -> list[str]:
    """The entries' names, or a RecipeError at the offending entry."""
    try:
        return label_names(entries)
    except AmalgamError as exc:
        index, _, msg = str(exc).partition(": ")
        raise RecipeError(f"{path}.{index}", msg) from None


def check_student_start(recipe: Recipe) -> None:
    """What the student starts from (``init`` or ``encoder_weights``) and its encoder's own rate."""
    student = recipe.student
    if student.init is not None and student.encoder_weights is not None:
        raise RecipeError("student.encoder_weights", "not with student.init (that sets every weight): keep one")
    if student.init is not None and student.branch_at == "auto":  # the build failed after the whole search
        raise RecipeError(
            "student.branch_at",
            "auto searches a tree, and student.init holds a student of its own tree, which the search rarely"
            " finds again: set student.branch_at to the tree of the run it came from, or leave out init",
        )
    if student.encoder_weights is not None and student.encoder == "auto":
        raise RecipeError(
            "student.encoder_weights", "needs a named student.encoder (auto sizes by budget and may choose another)"
        )
    if recipe.train.encoder_lr_scale != 1 and not names_its_encoder(student.type):
        raise RecipeError(
            "train.encoder_lr_scale", f"a '{student.type}' student does not say which modules are its encoder"
        )


def check_peers(recipe: Recipe) -> None:
    """A peer-learning recipe: no teachers, a labelled source, a buildable model."""
    peers = recipe.peers
    if recipe.teachers:
        raise RecipeError("peers", "a recipe has either teachers or peers, not both")
    at_key("peers.strategy", PEER_STRATEGIES.get, peers.strategy)
    for key in PEERS_UNUSED_TRAIN_KEYS:
        if key in recipe.train.model_fields_set:
            raise RecipeError(f"train.{key}", "not used by a peers build (it trains from labels, with no teachers)")
    if (source := recipe.data.sources.get(peers.source)) is not None and source.flip != "auto":
        raise RecipeError(  # as train.augment; the other sources are not read at all
            f"data.sources.{peers.source}.flip",
            "not used by a peers build (it mirrors no image): leave it out, or set auto where a base sets it",
        )
    at_key("peers.model", check_model, peers.model.source, peers.model.kwargs(), recipe.base_dir)
    if peers.source not in recipe.data.sources:
        raise RecipeError(
            "peers.source", f"unknown source '{peers.source}' (expected one of: {', '.join(recipe.data.sources)})"
        )
    if peers.eval is not None and peers.eval not in recipe.data.eval:
        raise RecipeError(
            "peers.eval", f"unknown eval set '{peers.eval}' (expected one of: {', '.join(recipe.data.eval)})"
        )
    if len(peers.input.mean) != peers.input.channels or len(peers.input.std) != peers.input.channels:
        raise RecipeError("peers.input", f"mean and std need {count_of(peers.input.channels, 'value')}")


def unused_peers_sections(recipe: Recipe) -> list[str]:
    """Log lines for a peers recipe's ``student`` and ``amalgamation`` sections, which it does not read (they went
    unsaid; not refused: a peers recipe may share a base with distillation ones)."""
    unused = [s for s in ("student", "amalgamation") if s in recipe.model_fields_set]
    return [f"{s}: not used by a peers build (it trains peers.model from labels, no teachers)" for s in unused]


def unused_student_keys(recipe: Recipe) -> list[str]:
    """Log lines for ``student`` keys the student type does not use: an integer ``branch_at`` away
    from its default on a student without branches (a variant may set one to undo its base's tree), and
    a timm tag on the encoder's name (its weights are never downloaded)."""
    s = recipe.student
    default = type(s).model_fields["branch_at"].default
    lines = []
    if (tag := encoder_tag(s.encoder)) is not None:  # a trial read it as starting from those weights
        lines.append(
            f"student.encoder: its tag '{tag}' names pretrained weights, which a student never downloads: it starts"
            " from student.encoder_weights (a file) or student.init, else from random weights"
        )
    if recipe.peers is not None or has_branches(s.type) or s.branch_at == default:
        return lines
    return lines + [
        f"student.branch_at: {s.branch_at} is not used by a {s.type} student (it has no branches: every task"
        " shares its encoder and decoder)"
    ]


def unused_settings(recipe: Recipe) -> list[str]:
    """Log lines for settings moved from their default that nothing reads in this recipe (a trial's taps
    without a feature term, sgd's momentum beside adamw, trained as if unwritten and unsaid)."""
    lines = []
    a, defaults = recipe.amalgamation, type(recipe.amalgamation).model_fields
    gate = a.ensemble is not None and LOGIT_ENSEMBLES.get(a.ensemble.type).needs_features  # reads the student's
    if a.features == "none":
        for key in ("taps", "feature_weight") + (() if gate else ("student_tap",)):
            if getattr(a, key) != defaults[key].default:
                lines.append(
                    f"amalgamation.{key}: not used: only a feature term reads it, and amalgamation.features is none"
                )
    train = recipe.train
    if train.optimizer != "sgd" and train.momentum != type(train).model_fields["momentum"].default:
        lines.append(f"train.momentum: not used: sgd's, and train.optimizer is {train.optimizer}")
    return lines


def check_branch_at(recipe: Recipe) -> None:
    """A per-task ``student.branch_at`` names each teacher task once; trees and ``auto`` need a branched student."""
    branch_at = recipe.student.branch_at
    if isinstance(branch_at, int):
        return
    if not has_branches(recipe.student.type):
        trees = " or ".join(n for n in STUDENTS.names() if has_branches(n))
        raise RecipeError(
            "student.branch_at",
            f"{branch_at!r} needs student.type: {trees} (a {recipe.student.type} student has no branches: leave"
            " branch_at at an integer, which it does not read, or write branch_at: 3 in a variant of a recipe"
            " that sets a tree)",
        )
    if isinstance(branch_at, dict):
        from amalgam.students.tree import branch_points

        tasks = list(dict.fromkeys(t.task for t in recipe.teachers.values()))
        at_key("student.branch_at", branch_points, branch_at, tasks)


def check_task_decoders(recipe: Recipe) -> None:
    """``student.task_decoder_channels`` names dense tasks of the teachers, and needs a decoder per task."""
    own = recipe.student.task_decoder_channels
    if not own:
        return
    if not has_branches(recipe.student.type):
        raise RecipeError(
            "student.task_decoder_channels",
            f"a {recipe.student.type} student shares one decoder among its tasks: drop this key"
            " (--set student.task_decoder_channels={}) and set student.decoder_channels",
        )
    dense = [t for t in dict.fromkeys(t.task for t in recipe.teachers.values()) if get_task(t).dense]
    for task in own:
        if task not in dense:
            choices = ", ".join(dense) or "none: no teacher has a dense task"
            raise RecipeError(f"student.task_decoder_channels.{task}", f"not a dense task of the teachers ({choices})")


def check_resize(name: str, t, dense: bool, tapped: bool) -> None:
    """``input.resize`` names a mode; a crop (a mode's or ``input.crop``) is refused where the unseen borders
    would be taught."""
    from amalgam.data.views import RESIZE_MODES

    why = "its dense answer" if dense else "its tapped feature (amalgamation.taps)" if tapped else None
    if t.input.crop is not None and t.input.crop < 1 and why:
        raise RecipeError(
            f"teachers.{name}.input.crop",
            f"{t.input.crop:g} hides the image's borders from the teacher, so {why} would not cover the student's"
            " image: leave crop out (1, the whole image)",
        )
    if t.input.resize is None:
        return
    at_key(f"teachers.{name}.input.resize", RESIZE_MODES.get, t.input.resize)
    if RESIZE_MODES.get(t.input.resize).sees_everything:
        return
    if why:
        raise RecipeError(
            f"teachers.{name}.input.resize",
            f"{t.input.resize} hides the image's borders from the teacher, so {why} would not cover the"
            " student's image: use letterbox (keeps the aspect ratio, pads) or stretch",
        )
