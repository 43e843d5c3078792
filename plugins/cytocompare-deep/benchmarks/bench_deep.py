#!/usr/bin/env python3
"""Training throughput of the deep arm: raw step rate vs. the end-to-end input pipeline.

Measured in one process, on one device, with the training loop's own code
(:class:`cytocompare_deep.training.Stepper`, :func:`prepare_input`, :mod:`.loading`):

* ``decode``      JPEG bytes -> uint8 (B,3,S,S) on the device (nvJPEG on CUDA, PIL on CPU)
* ``augment``     BatchAugment (rotation, flips, shift, shear, stain: ``--stain``, default the
                  classifier's Macenko + HED chain) on a device batch
* ``raw``         training steps on a uint8 batch already on the device (no decode, no augment)
* ``e2e_resident`` what ``fit`` does when the data set fits on the device: gather a batch of the
                  device-resident uint8 set + augment + step
* ``e2e_stream``  decode every batch from JPEG bytes + augment + step (paper-scale streaming)

Ratios ``e2e_* / raw`` are printed; the H100 target is e2e >= 0.9 x raw
(ResNeXt-50 raw about 2,500 img/s with bf16 + channels_last at 250x250).

Examples::

    python benchmarks/bench_deep.py --model resnext50 --images .device/matek-bm --json out.json
    python benchmarks/bench_deep.py --model sequential-cnn --compile
    python benchmarks/bench_deep.py --model resnext50 --cpu-smoke   # tiny settings, proves it runs
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # the plugin, when not installed

from cytocompare_deep import loading, models, training  # noqa: E402
from cytocompare_deep.augment_settings import DEFAULTS  # noqa: E402


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _timed(dev, fn, n_images: int, steps: int, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    _sync(dev)
    t0 = time.perf_counter()
    for _ in range(steps):
        fn()
    _sync(dev)
    return n_images * steps / (time.perf_counter() - t0)


def _jpeg_bytes(args, size: int) -> list[torch.Tensor]:
    """Encoded JPEGs: the files under --images (up to --max-files), or synthetic cells."""
    out = []
    if args.images:
        files = sorted(p for p in Path(args.images).rglob("*") if p.suffix.lower() in (".jpg", ".jpeg"))
        files = files[: args.max_files]
        if not files:
            raise SystemExit(f"no .jpg files under {args.images}")
        for p in files:
            out.append(torch.frombuffer(bytearray(p.read_bytes()), dtype=torch.uint8))
        return out
    from PIL import Image

    rng = np.random.RandomState(0)
    yy, xx = np.mgrid[:size, :size]
    for _ in range(256):
        a = np.full((size, size, 3), 230, np.uint8) + rng.randint(-10, 10, (size, size, 3)).astype(np.uint8)
        disc = (yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (size / 3) ** 2
        a[disc] = (120, 60, 150)
        buf = io.BytesIO()
        Image.fromarray(a).save(buf, format="JPEG", quality=90)
        out.append(torch.frombuffer(bytearray(buf.getvalue()), dtype=torch.uint8))
    return out


def _decode(batch: list[torch.Tensor], size: int, dev: torch.device) -> torch.Tensor:
    if dev.type == "cuda":
        return loading.decode_bytes_cuda(batch, size, dev)
    from torchvision.io import ImageReadMode, decode_jpeg

    return torch.stack([loading.resize_u8(decode_jpeg(b, mode=ImageReadMode.RGB)[None], size)[0] for b in batch])


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", choices=["resnext50", "sequential-cnn"], default="resnext50")
    ap.add_argument("--width", choices=["full", "tiny"], default="full")
    ap.add_argument("--compile", action="store_true", help="torch.compile the model")
    ap.add_argument("--images", help="folder of JPEGs (default: synthetic cells)")
    ap.add_argument("--max-files", type=int, default=2048)
    ap.add_argument("--steps", type=int, default=40, help="timed steps per measurement")
    ap.add_argument("--warmup", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--input-size", type=int, default=250, help="side the images are resized to (the CNNs' input_size)")
    ap.add_argument("--classes", type=int, default=21)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--no-channels-last", action="store_true")
    ap.add_argument("--stain", choices=["hed", "macenko", "macenko-hed"], default=DEFAULTS.stain,
                    help="stain augmentation (default: the classifier's, the Macenko + Tellez HED chain)")
    ap.add_argument("--no-stain", action="store_true")
    ap.add_argument("--cpu-smoke", action="store_true", help="tiny model, 64 px, batch 16, 3 steps")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args(argv)
    if args.cpu_smoke:
        args.width, args.input_size, args.batch_size, args.steps, args.warmup = "tiny", 64, 16, 3, 1

    from cytocompare_deep.augment import BatchAugment

    dev = training.resolve_device(args.device)
    amp = training.resolve_precision(args.precision, dev)
    cl = not args.no_channels_last
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
    torch.manual_seed(0)
    S, B = args.input_size, args.batch_size
    model = models.build(args.model, args.classes, width=args.width).to(dev)
    if cl:
        model.to(memory_format=torch.channels_last)
    setup = training.TrainSetup(
        name=args.model, epochs=1, samples_per_class=None, batch_size=B, lr=0.01, optimizer="sgd", momentum=0.9,
        weight_decay=5e-5, label_smoothing=0.0, warmup_epochs=0.0, device=dev, amp_dtype=amp, channels_last=cl,
        compile=args.compile, augment=None, random_state=0, deterministic=False, progress=False, checkpoint_dir=None,
        resume=False, fingerprint="", classes=[str(i) for i in range(args.classes)], params={},
    )
    stepper = training.Stepper(model, setup, total_steps=10**6, warmup_steps=0)
    aug = BatchAugment(stain=None if args.no_stain else args.stain)
    gen = torch.Generator(device=dev).manual_seed(0)
    mean = torch.tensor([0.8, 0.7, 0.8], device=dev).view(1, 3, 1, 1)
    std = torch.tensor([0.15, 0.2, 0.1], device=dev).view(1, 3, 1, 1)

    encoded = _jpeg_bytes(args, S)
    n_files = len(encoded)
    # the resident set: every file decoded once (at least one batch's worth, cycled)
    resident = torch.cat([_decode(encoded[i : i + 256], S, dev) for i in range(0, n_files, 256)])
    while len(resident) < B:
        resident = torch.cat([resident, resident])
    y = torch.randint(args.classes, (B,), device=dev)
    x_u8 = resident[:B].contiguous()
    cursor = {"i": 0}

    def next_bytes() -> list[torch.Tensor]:
        i = cursor["i"]
        cursor["i"] = (i + B) % n_files
        return [encoded[(i + k) % n_files] for k in range(B)]

    def next_index() -> torch.Tensor:
        return torch.randint(len(resident), (B,), device=dev, generator=gen)

    res: dict = {
        "model": args.model, "width": args.width, "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
        "torch": torch.__version__, "precision": str(amp), "channels_last": cl, "compile": args.compile,
        "batch_size": B, "input_size": S, "steps": args.steps, "files": n_files,
        "images_source": args.images or "synthetic", "stain": None if args.no_stain else args.stain,
        "parameters": models.count_parameters(model),
    }
    w = args.warmup
    res["decode_img_s"] = _timed(dev, lambda: _decode(next_bytes(), S, dev), B, max(2, args.steps // 4), 1)
    res["augment_img_s"] = _timed(dev, lambda: aug(x_u8.float().div(255), generator=gen), B, args.steps, w)
    res["raw_img_s"] = _timed(dev, lambda: stepper(training.prepare_input(x_u8, mean, std, cl), y), B, args.steps, w)
    res["e2e_resident_img_s"] = _timed(
        dev,
        lambda: stepper(training.prepare_input(resident.index_select(0, next_index()), mean, std, cl, aug, gen), y),
        B, args.steps, w,
    )
    res["e2e_stream_img_s"] = _timed(
        dev, lambda: stepper(training.prepare_input(_decode(next_bytes(), S, dev), mean, std, cl, aug, gen), y),
        B, args.steps, w,
    )
    res["ratio_resident"] = res["e2e_resident_img_s"] / res["raw_img_s"]
    res["ratio_stream"] = res["e2e_stream_img_s"] / res["raw_img_s"]
    if dev.type == "cuda":
        res["max_memory_gb"] = torch.cuda.max_memory_allocated(dev) / 1e9

    print(f"{args.model} ({args.width}) on {res['device']}, {S}x{S}, batch {B}, precision {res['precision']}, "
          f"channels_last={cl}, compile={args.compile}, {res['parameters']:,} parameters")
    for k in ("decode", "augment", "raw", "e2e_resident", "e2e_stream"):
        print(f"  {k:<13} {res[k + '_img_s']:>10,.0f} img/s")
    print(f"  e2e_resident / raw = {res['ratio_resident']:.2f}   e2e_stream / raw = {res['ratio_stream']:.2f}"
          "   (target on H100: >= 0.90)")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(res, indent=2))
    return res


if __name__ == "__main__":
    main()
