"""Each family's own preprocessing and forward pass, run in the tests as the reference for ours.

transformers' processors run as they are (their PIL backend, what transformers picks without torchvision).
open_clip's eval transforms are torchvision code, and torchvision cannot be imported beside this CPU torch, so they are
reproduced here from their documented definition, in torch, from the parameters open_clip set on the model
(``model.visual.preprocess_cfg``): ``Resize`` (PIL resize to size x size for ``squash``; for ``shortest`` the shorter
side to size, the longer ``int(size * long / short)``), ``CenterCrop`` (offset ``int(round((h - crop) / 2))``, zero
padding when smaller), RGB, ``ToTensor`` (float32 / 255), ``Normalize`` ((x - mean) / std). torchvision 0.28's
functional.py is the reading; the client (pipeline/query/preprocess.py) is written separately in numpy.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

INTERPOLATION = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}


def open_clip_preprocess(cfg: dict, image: Image.Image):
    import torch

    size = cfg["size"] if isinstance(cfg["size"], int) else cfg["size"][0]
    resample = INTERPOLATION[cfg["interpolation"]]
    if cfg["resize_mode"] == "squash":
        image = image.resize((size, size), resample)
    else:
        w, h = image.size
        short, long = (w, h) if w <= h else (h, w)
        new_short, new_long = size, int(size * long / short)
        new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
        image = image.resize((new_w, new_h), resample)
        w, h = image.size
        if size > w or size > h:
            padded = Image.new(image.mode, (max(w, size), max(h, size)), 0)
            padded.paste(image, ((size - w) // 2 if size > w else 0, (size - h) // 2 if size > h else 0))
            image = padded
            w, h = image.size
        top, left = round((h - size) / 2.0), round((w - size) / 2.0)  # torchvision: int(round(...))
        image = image.crop((left, top, left + size, top + size))
    image = image.convert("RGB")
    tensor = torch.from_numpy(np.array(image)).permute(2, 0, 1).contiguous().to(torch.float32).div(255)
    mean = torch.tensor(cfg["mean"], dtype=torch.float32)[:, None, None]
    std = torch.tensor(cfg["std"], dtype=torch.float32)[:, None, None]
    return (tensor - mean) / std
