"""Bounds on what a YAML document may expand to before anything is built from it.

YAML aliases let a few hundred bytes stand for billions of nodes (the "billion laughs"): loading
is instant because aliases share objects, but everything that walks the result afterwards
(validation, the recipe dump in the cache key, JSON) expands it. The composed node graph is
measured once, with each alias counted at its full expanded size, and refused above a budget.
"""

from __future__ import annotations

import yaml

from amalgam.errors import RecipeError

#: nodes a recipe may expand to; the largest shipped recipe has under 500
MAX_NODES = 100_000


def expanded_size(root: yaml.Node, limit: int = MAX_NODES) -> int:
    """Number of nodes ``root`` stands for with every alias expanded, stopping early above ``limit``.

    Each distinct node's size is computed once (memoised by identity), so a document whose
    aliases multiply to 10^9 nodes is measured in time proportional to its text.

    Raises:
        RecipeError: on a recursive alias or when the size exceeds ``limit``.
    """
    sizes: dict[int, int] = {}
    active: set[int] = set()

    def size(node: yaml.Node) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in active:
            line = node.start_mark.line + 1 if node.start_mark else "?"
            raise RecipeError("", f"recursive YAML alias at line {line}: a recipe must be a finite tree")
        active.add(key)
        total = 1
        if isinstance(node, yaml.SequenceNode):
            children = node.value
        elif isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        else:
            children = []
        for child in children:
            total += size(child)
            if total > limit:
                raise RecipeError(
                    "",
                    f"the YAML expands to more than {limit:,} nodes (aliases repeated inside aliases?): refused; "
                    "a recipe is a small tree",
                )
        active.discard(key)
        sizes[key] = total
        return total

    return size(root)


class BoundedLoaderMixin:
    """For a ``yaml`` loader class: refuse documents whose alias-expanded size exceeds :data:`MAX_NODES`."""

    def get_single_data(self):  # noqa: D102 - same contract as yaml's, plus the bound
        node = self.get_single_node()
        if node is None:
            return None
        expanded_size(node)
        return self.construct_document(node)
