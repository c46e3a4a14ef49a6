"""CycleGAN step speed (issue 15): training steps per second of each generator with the seeds' widths.

    .venv/bin/python bench/synth.py                       # unet and resnet9 at 64 px, 20 timed steps each
    .venv/bin/python bench/synth.py --size 256 --steps 5  # the seeds' side (slow on a CPU)
    KERAS_BACKEND=jax .venv/bin/python bench/synth.py     # the JAX step

The networks are the full-width ones (`gen_filters` 64, `disc_filters` 64, 9 residual blocks, the 70x70
PatchGAN), batch 1, on random images: the data pipeline is not what is measured. The first step (tracing)
is timed separately. Prints one line per generator and, with --jsonl FILE, appends them there.
"""

from __future__ import annotations

import argparse
import json
import os
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=20, help="timed steps after the first")
    ap.add_argument("--generators", default="unet,resnet9")
    ap.add_argument("--jsonl", help="append the results to this file")
    args = ap.parse_args()

    import keras
    import numpy as np

    from melanoma.config import load_config
    from melanoma.synth import loop

    rng = np.random.default_rng(0)
    for kind in args.generators.split(","):
        scfg = load_config(None, [f"synth.generator={kind}", f"synth.size={args.size}",
                                  f"synth.steps={args.steps + 1}"]).synth
        nets = loop.build_nets(scfg)
        step = loop.make_step(nets, scfg)
        a, b = (rng.uniform(-1, 1, (1, args.size, args.size, 3)).astype(np.float32) for _ in range(2))
        t = time.perf_counter()
        float(keras.ops.convert_to_numpy(step(a, b)["g_loss"]))
        first = time.perf_counter() - t
        t = time.perf_counter()
        for _ in range(args.steps):
            losses = step(a, b)
        float(keras.ops.convert_to_numpy(losses["g_loss"]))
        rate = args.steps / (time.perf_counter() - t)
        params = sum(int(np.prod(v.shape)) for m in (nets.g_ab, nets.d_a) for v in m.trainable_variables)
        row = {"generator": kind, "size": args.size, "backend": keras.backend.backend(), "steps_per_s": round(rate, 3),
               "first_step_s": round(first, 1), "params_generator_plus_discriminator": params,
               "load": round(os.getloadavg()[0], 1)}
        print(json.dumps(row))
        if args.jsonl:
            with open(args.jsonl, "a") as f:
                f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
