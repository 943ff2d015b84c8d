"""Mixing several unlabeled sources into one stream whose samples remember their source."""

from __future__ import annotations

from bisect import bisect_right
from typing import Sequence

import torch
from torch.utils.data import Dataset, WeightedRandomSampler


class MixedSources(Dataset):
    """Concatenates sources; each sample gets ``source`` (the set it came from) and its ``index``."""

    def __init__(self, sets: Sequence[Dataset], names: Sequence[str]):
        self.sets = list(sets)
        self.names = list(names)
        self.offsets = [0]
        for s in self.sets:
            self.offsets.append(self.offsets[-1] + len(s))

    def __len__(self) -> int:
        return self.offsets[-1]

    def fingerprints(self) -> dict[str, dict]:
        """Per source, how many images it holds and its set's ``fingerprint()`` (which images)."""
        return {name: fingerprint(s) for name, s in zip(self.names, self.sets)}

    def __getitem__(self, index: int) -> dict:
        source = bisect_right(self.offsets, index) - 1
        sample = self.sets[source][index - self.offsets[source]]
        sample["source"] = source
        sample["index"] = index  # global position: the teacher cache's key
        return sample


def fingerprint(dataset: Dataset) -> dict:
    """``{"images": n, "files": digest}`` of one source (a dataset without ``fingerprint()``: its length)."""
    listing = dataset.fingerprint() if hasattr(dataset, "fingerprint") else None
    return {"images": len(dataset), "files": listing}


def mixing_sampler(mixed: MixedSources, weights: Sequence[float], num_samples: int, seed: int) -> WeightedRandomSampler:
    """Samples so that source ``s`` makes up ``weights[s] / sum(weights)`` of each epoch.

    Args:
        mixed: the concatenated sources.
        weights: relative share of each source (recipe ``weight``).
        num_samples: samples per epoch.
        seed: seeds the sampler's generator (runs are reproducible).
    """
    total = float(sum(weights))
    per_sample = torch.cat(
        [torch.full((len(s),), w / total / len(s), dtype=torch.double) for s, w in zip(mixed.sets, weights)]
    )
    generator = torch.Generator().manual_seed(seed)
    return WeightedRandomSampler(per_sample, num_samples=num_samples, replacement=True, generator=generator)
