"""The image pool of Shrivastava et al. 2017 that CycleGAN's discriminators learn from."""

from __future__ import annotations

import torch
from torch import Tensor


class ImagePool:
    """A buffer of up to ``size`` generated images (50 in CycleGAN). ``query(images)`` returns a batch
    of the same shape: while the pool fills, each image is stored and returned; once full, each image is
    with probability 1/2 returned as it is, otherwise swapped with a random stored image, which is
    returned instead. size=0 returns the batch unchanged. Decisions use the global CPU torch RNG (so
    saving and restoring RNG states reproduces them); ``state_dict``/``load_state_dict`` save the pool.
    Images are stored detached; shape (N, C, H, W) in, (N, C, H, W) out.
    """

    def __init__(self, size: int = 50) -> None:
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise ValueError(f"size must be an int >= 0, got {size!r}")
        self.size = size
        self.images: list[Tensor] = []

    def query(self, images: Tensor) -> Tensor:
        if self.size == 0:
            return images
        out = []
        for image in images.detach():
            if len(self.images) < self.size:
                self.images.append(image.clone())
                out.append(image)
            elif torch.rand(()).item() < 0.5:
                out.append(image)
            else:
                k = int(torch.randint(self.size, ()).item())
                out.append(self.images[k])
                self.images[k] = image.clone()
        return torch.stack(out)

    def __len__(self) -> int:
        return len(self.images)

    def state_dict(self) -> dict:
        return {"size": self.size, "images": list(self.images)}

    def load_state_dict(self, state: dict) -> None:
        if state["size"] != self.size:
            raise ValueError(f"the saved pool has size {state['size']}, this one {self.size}")
        self.images = list(state["images"])
