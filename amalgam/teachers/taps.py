"""Forward-hook taps: a named submodule's latest output, read once per forward (feature terms, ensembles).

Like torchdistill's forward-hook manager, kept to one class: a :class:`FeatureTap` is attached to a
module by name and keeps a copy of its output; :meth:`FeatureTap.take` refuses a module that did not
run, or ran several times, since the last take, so a skipped branch never hands on a stale feature.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from amalgam.errors import AmalgamError


@dataclass
class FeatureTap:
    """Keeps the latest output of a named submodule through a forward hook.

    Made attached with :meth:`on` (the hook handle is kept: :meth:`detach` removes it). Whoever
    makes a tap owns it; a teacher is never tapped behind its back (see :meth:`Teacher.answer`).

    ``value`` is the module's last output, whenever it ran: in a loop of your own read it with
    :meth:`take`, which refuses a module that did not run since the last take (a skipped branch
    left the previous batch's value) or ran more than once (a shared module: only its last call is
    kept).
    """

    module_name: str
    value: Optional[torch.Tensor] = None
    #: how many times the module ran since the last :meth:`take` or :meth:`clear`
    calls: int = field(default=0, compare=False)
    handle: Optional[RemovableHandle] = field(default=None, repr=False, compare=False)
    #: the network it was attached to (:meth:`Teacher.answer` refuses a tap on another network)
    model: Optional[nn.Module] = field(default=None, repr=False, compare=False)

    @classmethod
    def on(cls, model: nn.Module, module_name: str, owner: str) -> "FeatureTap":
        """A tap attached to ``module_name`` of ``model``; errors name ``owner`` (a recipe key)."""
        tap = cls(module_name)
        tap.attach(model, owner)
        return tap

    def attach(self, model: nn.Module, owner: str) -> None:
        """Hooks ``module_name`` of ``model``; raises naming the owner if it does not exist."""
        if isinstance(model, torch.jit.ScriptModule):  # no get_submodule, no forward hooks
            raise AmalgamError(f"{owner}: cannot tap '{self.module_name}' of a TorchScript model")
        try:
            module = model.get_submodule(self.module_name)
        except AttributeError:
            names = [n for n, _ in model.named_modules() if n and n.count(".") < 2][:12]
            raise AmalgamError(f"{owner}: no module named '{self.module_name}' (e.g. {', '.join(names)})") from None
        if isinstance(module, torch.jit.ScriptModule):
            raise AmalgamError(f"{owner}: cannot tap '{self.module_name}' of a TorchScript model")
        self.detach()
        self.clear()  # a value of the network it was on before is not this one's
        self.handle = module.register_forward_hook(self._store)
        self.model = model

    def detach(self) -> None:
        """Removes the hook (the last value stays readable)."""
        if self.handle is not None:
            self.handle.remove()
            self.handle = None
        self.model = None

    def clear(self) -> None:
        """Forgets the value and the count of calls (before a forward whose feature is wanted)."""
        self.value, self.calls = None, 0

    def take(self) -> torch.Tensor:
        """The module's output of the one forward since the last take (or :meth:`clear`), then clears.

        Raises:
            AmalgamError: the module did not run since then, or ran more than once.
        """
        value, calls = self.value, self.calls
        self.clear()
        if calls == 0 or value is None:
            raise AmalgamError(
                f"tap '{self.module_name}': the module did not run since the last take() (a container, or a"
                " branch this input skips?): tap a module that runs on every forward"
            )
        if calls > 1:
            raise AmalgamError(
                f"tap '{self.module_name}': the module ran {calls} times since the last take() (used twice in one"
                " forward?) and only its last output is kept: tap a module that runs once, or take() after each call"
            )
        return value

    def _store(self, module: nn.Module, args, output) -> None:
        if torch._C._current_graph_task_id() != -1:  # activation checkpointing's recompute, in backward
            return
        value = output[0] if isinstance(output, (tuple, list)) else output
        # a copy: the network goes on and may change it in place (a ResNet's out += identity, ReLU(inplace))
        self.value = value.clone() if isinstance(value, torch.Tensor) else value
        self.calls += 1


class TapNotRun(AmalgamError):
    """:meth:`Teacher.answer`'s refusal of a tap whose module did not run on the call (a container,
    a skipped branch): a caller that can say more (the recipe key) catches it."""

    def __init__(self, teacher: str, module_name: str):
        super().__init__(
            f"teacher '{teacher}': module '{module_name}' never ran in its forward (a container,"
            " or a branch this input skips?): tap a module that runs"
        )
        self.teacher, self.module_name = teacher, module_name
