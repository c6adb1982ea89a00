"""Recipe variants from one training (single process, no Horovod; issue 14).

    python bench/recipe_variants.py DATASET_DIR --blocks 4 --lr 1e-4 [--mixup 0.2]
    python bench/recipe_variants.py DATASET_DIR --held-out HELD_OUT_DIR [--steps 480] ...
    python bench/recipe_variants.py DATASET_DIR --multi-layer | --llrd 0.8 ...

DATASET_DIR is a `gallerytag ingest` output. It mirrors the trainer's recipe (LP-FT head from
`components.common.probe`, `tfdata.augmentation`, label smoothing, Adam, cosine per epoch,
epochs sized like `recipe.auto_epochs`) and scores, from one training, WiSE-FT weight interpolation
between the LP-FT start (pretrained backbone + probe head) and the final weights, alpha in
{0, .25, .5, .75, 1}, each with and without test-time horizontal-flip averaging.

A test split of 150-200 images moves a gap by about +-0.03 from one split to the next, more
than most recipe changes are worth. `--held-out` also scores the probe and every alpha on the
test split of another ingest with the same labels (`bench/fashion_held_out.py` writes 2,000
Fashion-MNIST test-set images, none of them in the fashion galleries), where that is +-0.01.
"""

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import keras
import numpy as np
import tensorflow as tf

from components.common import dataset
from components.common.probe import fit_probe
from components.common.tfdata import augmentation
from components.train import wise
from models.head import build_classifier, set_trainable_top_blocks
from models.registry import BACKBONES, build_backbone

ALPHAS = (0.0, 0.25, 0.5, 0.75, 1.0)


def load(ddir, split, m):
    files = dataset.shard_paths(ddir, m, split)
    feats = {
        dataset.FEATURE_IMAGE: tf.io.FixedLenFeature([], tf.string),
        dataset.FEATURE_LABEL: tf.io.FixedLenFeature([], tf.int64),
    }
    xs, ys = [], []
    for r in tf.data.TFRecordDataset(files):
        e = tf.io.parse_single_example(r, feats)
        xs.append(tf.io.decode_jpeg(e[dataset.FEATURE_IMAGE], channels=3).numpy())
        ys.append(int(e[dataset.FEATURE_LABEL]))
    return np.stack(xs), np.array(ys)


def held_out(ddir: str, labels: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Test split of another ingest, its labels renumbered to `labels`' order."""
    manifest = dataset.read_manifest(ddir)
    unknown = set(manifest.labels) - set(labels)
    if unknown:
        raise SystemExit(f"--held-out {ddir} has labels the training data lacks: {sorted(unknown)}")
    x, y = load(ddir, "test", manifest)
    return x, np.array([labels.index(manifest.labels[i]) for i in y])


def cutmix(x, targets, alpha):
    """Paste one box of a shuffled partner into every image; targets by pasted area."""
    g1 = tf.random.gamma([], alpha)
    kept = g1 / (g1 + tf.random.gamma([], alpha))
    perm = tf.random.shuffle(tf.range(tf.shape(x)[0]))
    side = tf.shape(x)[1]
    cut = tf.cast(tf.cast(side, tf.float32) * tf.sqrt(1.0 - kept), tf.int32)
    cy, cx = tf.random.uniform([], 0, side, tf.int32), tf.random.uniform([], 0, side, tf.int32)
    y0, y1 = tf.maximum(cy - cut // 2, 0), tf.minimum(cy + cut // 2, side)
    x0, x1 = tf.maximum(cx - cut // 2, 0), tf.minimum(cx + cut // 2, side)
    rows = tf.range(side)
    inside = ((rows >= y0) & (rows < y1))[:, None] & ((rows >= x0) & (rows < x1))[None, :]
    mask = tf.cast(inside, tf.float32)[None, :, :, None]
    area = tf.reduce_mean(mask)
    return x * (1 - mask) + tf.gather(x, perm) * mask, (1 - area) * targets + area * tf.gather(
        targets, perm
    )


LITE0 = BACKBONES["efficientnet_lite0"]


def block_index(layer_name: str) -> int | None:
    """Which Lite0 block (0 = bottom) a layer belongs to, by the registry's prefixes."""
    for i, prefix in enumerate(LITE0.block_prefixes):
        if layer_name.startswith(prefix):
            return i
    return None


def block_taps(backbone: keras.Model) -> keras.Model:
    """The backbone's pooled features with every block's pooled output concatenated."""
    ends: dict[int, str] = {}
    for layer in backbone.layers:  # in graph order, so the last one seen ends the block
        block = block_index(layer.name)
        if block is not None:
            ends[block] = layer.name
    pooled = [
        keras.layers.GlobalAveragePooling2D(name=f"tap_{i}")(backbone.get_layer(name).output)
        for i, name in sorted(ends.items())
    ]
    features = keras.layers.Concatenate(name="taps")([*pooled, backbone.output])
    return keras.Model(backbone.input, features, name=f"{backbone.name}_taps")


def predict(model, x, flip=False, bs=64):
    out = []
    for i in range(0, len(x), bs):
        b = x[i : i + bs].astype(np.float32)
        p = np.asarray(model.predict_on_batch(b))
        if flip:
            p = (p + np.asarray(model.predict_on_batch(b[:, :, ::-1]))) / 2
        out.append(p)
    return np.concatenate(out)


def scores(p, y):
    top1 = float((p.argmax(1) == y).mean())
    top3 = float(np.mean([yy in np.argsort(-pp)[:3] for pp, yy in zip(p, y, strict=True)]))
    ll = float(-np.mean(np.log(p[np.arange(len(y)), y] + 1e-12)))
    return top1, top3, ll


def main() -> None:
    """Train once, score the variants, append one JSON line to --out."""
    p = argparse.ArgumentParser()
    p.add_argument("data")
    p.add_argument("--blocks", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--steps", type=int, default=240, help="target steps; epochs sized like recipe")
    p.add_argument("--epochs", type=int, default=0)
    p.add_argument("--ls", type=float, default=0.1)
    p.add_argument("--mixup", type=float, default=0.0)
    p.add_argument("--wd", type=float, default=0.0)
    p.add_argument("--cutmix", type=float, default=0.0, help="CutMix Beta(a, a); 0 = off")
    p.add_argument(
        "--warmup", type=float, default=0.0, help="linear warm-up from 0 over this share of steps"
    )
    p.add_argument(
        "--llrd", type=float, default=1.0, help="rate x this per block below the top (1 = off)"
    )
    p.add_argument("--multi-layer", action="store_true", help="head on every block's pooling")
    p.add_argument(
        "--train-size", type=int, default=0, help="train at this side, test at the data's"
    )
    p.add_argument("--held-out", default="", help="another ingest whose test split is scored too")
    p.add_argument("--bs", type=int, default=32)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--tag", default="")
    p.add_argument("--out", default="build/recipe-variants.jsonl")
    a = p.parse_args()
    keras.utils.set_random_seed(a.seed)
    m = dataset.read_manifest(a.data)
    if a.multi_layer and a.train_size not in (0, m.image_size):  # before any slow work
        raise SystemExit("--train-size and --multi-layer do not combine")
    t0 = time.time()
    xtr, ytr = load(a.data, "train", m)
    xva, yva = load(a.data, "validation", m)
    xte, yte = load(a.data, "test", m)
    size, k = m.image_size, len(m.labels)
    xho, yho = held_out(a.held_out, m.labels) if a.held_out else (None, None)
    bb = build_backbone("efficientnet_lite0", size)
    ftr, fva, fte = (predict(bb, x) for x in (xtr, xva, xte))
    probe = fit_probe(ftr, ytr, k, fva, yva)
    p_te = probe.probabilities(fte)
    probe_test = scores(p_te, yte)
    probe_held_out = None
    if xho is not None:
        probe_held_out = scores(probe.probabilities(predict(bb, xho)), yho)[0]
        print(f"held-out {len(yho)} images: probe {probe_held_out:.4f}", flush=True)
    t_probe = time.time() - t0
    print(
        f"{a.data} n {len(ytr)}/{len(yva)}/{len(yte)} probe C={probe.c} "
        f"val={probe.validation_accuracy:.3f} test={probe_test[0]:.3f} ({t_probe:.0f}s)",
        flush=True,
    )
    head_probe = probe
    if a.multi_layer:  # Head2Toe-like: the head sees every block's pooled output too
        bb = block_taps(bb)
        mtr, mva, mte = (predict(bb, x) for x in (xtr, xva, xte))
        head_probe = fit_probe(mtr, ytr, k, mva, yva)
        ml = {"test": scores(head_probe.probabilities(mte), yte)[0], "c": head_probe.c}
        if xho is not None:
            ml["held_out"] = scores(head_probe.probabilities(predict(bb, xho)), yho)[0]
        print(f"multi-layer probe ({bb.output_shape[-1]} features): {ml}", flush=True)
    model = build_classifier(bb, k, 0.2)
    model.get_layer("tags").set_weights([head_probe.kernel, head_probe.bias])
    start = [np.array(w) for w in model.get_weights()]

    steps = max(1, len(ytr) // a.bs)
    epochs = a.epochs or max(4, min(30, math.ceil(a.steps / steps)))
    train_size = a.train_size or size
    aug = augmentation(train_size)  # crops are resized to the training side
    scoring = model
    if train_size != size:
        # Same weights, another input side: the convolutions and the pooling do not care.
        model = build_classifier(build_backbone("efficientnet_lite0", train_size), k, 0.2)
        model.set_weights(scoring.get_weights())
    ds = tf.data.Dataset.from_tensor_slices((xtr, ytr)).shuffle(len(ytr), seed=a.seed).repeat()
    ds = ds.map(lambda x, y: (tf.cast(x, tf.float32), y)).map(
        aug, num_parallel_calls=tf.data.AUTOTUNE
    )
    it = iter(ds.batch(a.bs, drop_remainder=True).prefetch(2))
    set_trainable_top_blocks(model, LITE0, a.blocks)
    # One optimiser per rate: Adam divides out any gradient scale, so a layer-wise rate
    # needs its own optimiser (block i of n trains at lr * llrd ** (n - 1 - i)).
    top = len(LITE0.block_prefixes) - 1
    groups: dict[float, list] = {}
    for v in model.trainable_variables:
        block = block_index(v.path.split("/")[-2] if "/" in v.path else "")
        scale = a.llrd ** (top - block) if block is not None else 1.0
        groups.setdefault(scale, []).append(v)
    opts = []
    for scale, variables in sorted(groups.items()):
        opt = (
            keras.optimizers.AdamW(learning_rate=a.lr * scale, weight_decay=a.wd)
            if a.wd
            else keras.optimizers.Adam(learning_rate=a.lr * scale)
        )
        opt.build(variables)
        opts.append((scale, opt, variables))
    print("rate groups", [(f"{s:.3f}", len(v)) for s, _, v in opts], flush=True)
    cce = keras.losses.CategoricalCrossentropy(label_smoothing=a.ls)

    @tf.function
    def step(x, y):
        oh = tf.one_hot(y, k)
        if a.mixup > 0:
            g1 = tf.random.gamma([], a.mixup)
            lam = g1 / (g1 + tf.random.gamma([], a.mixup))
            perm = tf.random.shuffle(tf.range(tf.shape(x)[0]))
            x = lam * x + (1 - lam) * tf.gather(x, perm)
            oh = lam * oh + (1 - lam) * tf.gather(oh, perm)
        if a.cutmix > 0:
            x, oh = cutmix(x, oh, a.cutmix)
        with tf.GradientTape() as tape:
            pr = model(x, training=True)
            loss = cce(oh, pr)
        grads = tape.gradient(loss, [v for _, _, group in opts for v in group])
        for _, opt, variables in opts:
            g, grads = grads[: len(variables)], grads[len(variables) :]
            opt.apply_gradients(zip(g, variables, strict=True))
        return loss

    curve = []
    for ep in range(epochs):
        te = time.time()
        lr = 0.5 * a.lr * (1 + math.cos(math.pi * ep / epochs))
        for scale, opt, _ in opts:
            opt.learning_rate.assign(lr * scale)
        ls = []
        for i in range(steps):
            if a.warmup > 0:  # Adam's first steps move every weight by ~lr: ramp up from 0
                ramp = min(1.0, (ep * steps + i + 1) / (a.warmup * epochs * steps))
                for scale, opt, _ in opts:
                    opt.learning_rate.assign(lr * scale * ramp)
            ls.append(float(step(*next(it))))
        if scoring is not model:  # another side: copy the trained weights into the scorer
            scoring.set_weights(model.get_weights())
        v = scores(predict(scoring, xva), yva)
        curve.append({"ep": ep, "loss": float(np.mean(ls)), "val": v[0], "val_ll": v[2]})
        print(
            f"  ep {ep} lr {lr:.2e} loss {np.mean(ls):.3f} val {v[0]:.3f} ll {v[2]:.3f} "
            f"({time.time() - te:.0f}s)",
            flush=True,
        )
    t_train = time.time() - t0 - t_probe
    final = [np.array(w) for w in model.get_weights()]
    model = scoring
    variants = []
    for alpha in ALPHAS:
        model.set_weights(wise.interpolate(start, final, alpha))
        if xho is not None:
            top1 = scores(predict(model, xho), yho)[0]
            variants.append({"alpha": alpha, "held_out": top1})
            print(f"  alpha {alpha}: held-out {top1:.4f} (probe {probe_held_out:.4f})", flush=True)
        for flip in (False, True):
            v = scores(predict(model, xva, flip), yva)
            t = scores(predict(model, xte, flip), yte)
            variants.append(
                {
                    "alpha": alpha,
                    "flip": flip,
                    "val": v[0],
                    "val_ll": v[2],
                    "test": t[0],
                    "test3": t[1],
                }
            )
            print(
                f"  alpha {alpha} flip {flip}: val {v[0]:.3f} ll {v[2]:.3f} test {t[0]:.3f} "
                f"top3 {t[1]:.3f}",
                flush=True,
            )
    res = dict(
        vars(a),
        epochs=epochs,
        steps_per_epoch=steps,
        n=[len(ytr), len(yva), len(yte)],
        probe_test=probe_test[0],
        probe_held_out=probe_held_out,
        probe_test3=probe_test[1],
        probe_val=probe.validation_accuracy,
        probe_c=probe.c,
        variants=variants,
        curve=curve,
        probe_s=t_probe,
        train_s=t_train,
        seconds=time.time() - t0,
        load=os.getloadavg(),
    )
    print("RESULT", json.dumps(res), flush=True)
    with open(a.out, "a") as f:
        f.write(json.dumps(res) + "\n")


if __name__ == "__main__":
    main()
