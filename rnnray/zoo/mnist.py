"""Zoo B's data: MNIST digits, rotated by the task's angle, read as 4x4 tiles.

Source: torchvision's 60,000 training digits where they are on disk or can be downloaded; otherwise
the 10,000-digit MNIST test set shipped in ``rnnray/data/mnist`` (CC BY-SA 3.0, LeCun, Cortes and
Burges). Which one was used is written into the zoo's manifest.

Choices written down:
* rotation is bilinear, counter-clockwise by the angle, about the image centre, with zero fill, on
  the raw [0, 1] image; normalisation (mean 0.1307, std 0.3081) comes after, so the fill is the
  background value;
* the BOS step is a tile of zeros (after normalisation);
* held-out digits are those whose index hashes (Knuth's multiplicative hash) to 0 mod 5: 20 %.
"""

from __future__ import annotations

import gzip
import hashlib
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

MEAN, STD = 0.1307, 0.3081
TILE = 4
TILES = (28 // TILE) ** 2  # 49
STEPS = TILES + 1  # BOS + 49 tiles
BUNDLED = Path(__file__).resolve().parent.parent / "data" / "mnist"
BUNDLED_MD5 = {
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load_bundled() -> tuple[np.ndarray, np.ndarray]:
    for name, md5 in BUNDLED_MD5.items():
        digest = hashlib.md5((BUNDLED / name).read_bytes()).hexdigest()
        if digest != md5:
            raise RuntimeError(f"{BUNDLED / name}: checksum mismatch, the bundled MNIST copy is damaged")
    return _read_idx(BUNDLED / "t10k-images-idx3-ubyte.gz"), _read_idx(BUNDLED / "t10k-labels-idx1-ubyte.gz")


def load_digits(source: str = "auto", root: str = "~/.cache/rnnray/mnist", download: bool = True):
    """(images uint8 (N, 28, 28), labels uint8 (N,), name of the source used)."""
    if source in ("auto", "torchvision"):
        try:
            import torchvision

            ds = torchvision.datasets.MNIST(str(Path(root).expanduser()), train=True, download=download)
            return ds.data.numpy(), ds.targets.numpy().astype(np.uint8), "torchvision-train-60000"
        except Exception as e:  # no network, no files: fall back unless torchvision was demanded
            if source == "torchvision":
                raise RuntimeError(f"torchvision MNIST unavailable under {root}: {e}") from None
    images, labels = load_bundled()
    return images, labels, "bundled-t10k-10000"


def heldout_mask(n: int) -> np.ndarray:
    """The fixed 80/20 split: True for held-out digits. Depends only on the digit's index."""
    idx = np.arange(n, dtype=np.uint64)
    h = (idx * np.uint64(2654435761)) % np.uint64(2**32)
    return (h >> np.uint64(16)) % np.uint64(5) == 0


def rotate(images: torch.Tensor, angles_deg: torch.Tensor) -> torch.Tensor:
    """Rotate (N, 28, 28) images in [0, 1] by per-image angles (N,) in degrees."""
    a = angles_deg.to(images.dtype) * (math.pi / 180.0)
    cos, sin = torch.cos(a), torch.sin(a)
    zero = torch.zeros_like(a)
    theta = torch.stack([torch.stack([cos, -sin, zero], -1), torch.stack([sin, cos, zero], -1)], -2)
    grid = F.affine_grid(theta, (images.shape[0], 1, 28, 28), align_corners=False)
    return F.grid_sample(images.unsqueeze(1), grid, mode="bilinear", padding_mode="zeros", align_corners=False)[:, 0]


def to_sequences(images_u8: torch.Tensor, angles_deg: torch.Tensor) -> torch.Tensor:
    """uint8 digits (N, 28, 28) + angles (N,) -> input sequences (N, 50, 16): BOS then 49 tiles."""
    x = rotate(images_u8.to(torch.float32) / 255.0, angles_deg)
    x = (x - MEAN) / STD
    n = x.shape[0]
    tiles = x.view(n, 28 // TILE, TILE, 28 // TILE, TILE).permute(0, 1, 3, 2, 4).reshape(n, TILES, TILE * TILE)
    return torch.cat([tiles.new_zeros(n, 1, TILE * TILE), tiles], dim=1)
