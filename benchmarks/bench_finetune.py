"""Backbone throughput, side by side in one run: the embed pass, training with the backbone frozen inside ``fit``,
the fine-tune stage (top blocks unfrozen, BatchNorm frozen) and a full fine-tune (every block unfrozen).

The issue measured on one H100 (EfficientNetV2B0, batch 128, bf16, JAX): full fine-tuning ~2,550 posters/s, a frozen
backbone inside ``fit`` ~4,050/s, a plain forward pass ~11,700/s. This prints the same ratios for the machine it runs
on (CPU here: no GPU machine was lent to this project), all from posters already decoded in memory, so the figures
are the model's and not the JPEG decoder's.

Run: ``python -m benchmarks.bench_finetune [--backbone lite0 --posters 256 --image-size 224 --batch-size 32]``.
"""

from __future__ import annotations

import argparse
import os
import time


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="lite0", help="lite0 has offline ImageNet weights; others use none")
    parser.add_argument("--posters", type=int, default=256)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--top-blocks", type=int, default=2)
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    import keras
    import numpy as np

    from postergenre.finetune import backbone_blocks, unfreeze_top
    from postergenre.models import build_backbone, build_classifier, build_head, compile_head

    weights = "imagenet" if args.backbone == "lite0" else "none"
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (args.posters, args.image_size, args.image_size, 3)).astype("float32")
    y = np.eye(19, dtype="float32")[rng.integers(0, 19, args.posters)]

    def classifier(unfrozen_blocks: int | None) -> keras.Model:
        backbone = build_backbone(args.backbone, weights=weights, image_size=args.image_size)
        model = build_classifier(backbone, build_head(int(backbone.output_shape[-1]), units=256, dropout=True,
                                                      n_outputs=19))
        if unfrozen_blocks:
            unfreeze_top(backbone, unfrozen_blocks)
        return compile_head(model, "multiclass", learning_rate=1e-5)

    def rate(run) -> float:
        run()  # warm-up: tracing and compilation are paid once per model, not per poster
        start = time.perf_counter()
        run()
        return args.posters / (time.perf_counter() - start)

    backbone = build_backbone(args.backbone, weights=weights, image_size=args.image_size)
    n_blocks = len(backbone_blocks(backbone))
    rates = {"embed (forward pass)": rate(lambda: backbone.predict(x, batch_size=args.batch_size, verbose=0))}
    for label, blocks in (
        ("fit, backbone frozen", None),
        (f"fine-tune, top {args.top_blocks} blocks", args.top_blocks),
        (f"fine-tune, all {n_blocks} blocks", n_blocks),
    ):
        model = classifier(blocks)
        rates[label] = rate(lambda m=model: m.fit(x, y, batch_size=args.batch_size, epochs=1, verbose=0))

    cores = len(os.sched_getaffinity(0))
    print(f"\n== backbone throughput: {args.backbone} ({weights}), {args.image_size} px, batch {args.batch_size}, "
          f"{args.posters} posters in memory, {cores} CPU cores, keras backend {keras.backend.backend()} ==")
    base = rates["embed (forward pass)"]
    for label, value in rates.items():
        print(f"  {label:<32} {value:8.1f} posters/s   {value / base:5.2f}x of the embed pass")
    return rates


if __name__ == "__main__":
    main()
