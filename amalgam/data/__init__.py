"""Image sources (unlabeled, for training) and eval sets (labelled), and their mixing."""

from amalgam.data.copies import shared_images
from amalgam.data.image_set import SOURCE_TYPES, ImageSet
from amalgam.data.mixing import MixedSources, mixing_sampler
from amalgam.data.sources import build_image_set

__all__ = ["SOURCE_TYPES", "ImageSet", "MixedSources", "build_image_set", "mixing_sampler", "shared_images"]
