"""Fashion-MNIST train items 0..19999, each centred in a black canvas twice its side (56 px), as PNGs."""
import numpy as np
from PIL import Image
from torchvision.datasets import FashionMNIST
from pathlib import Path
ds = FashionMNIST("/work/main/data/fashion", train=True)
out = Path("items_far"); out.mkdir(exist_ok=True)
for i in range(20000):
    a = np.asarray(ds[i][0])
    c = np.zeros((56, 56), np.uint8); c[14:42, 14:42] = a
    Image.fromarray(c).save(out / f"{i:05d}.png")
