"""The generalization-gap analysis of the paper's Fig. 2 and 6: accuracy under PGD on the training vs the
test split over eps, and the local Lipschitz value ||d loss / d x||_2 on both."""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from robgan_tf import data as data_lib
from robgan_tf import storage
from robgan_tf.attacks import class_logits
from robgan_tf.losses import class_ce
from robgan_tf.progress import Progress
from robgan_tf.robustness import accuracy_under_attack


def local_lipschitz(classifier, images, labels):
    """Per-example ||d CE(f(x), y) / dx||_2: the paper's local Lipschitz value (LLV)."""
    x = tf.convert_to_tensor(images, tf.float32)
    with tf.GradientTape(watch_accessed_variables=False) as tape:
        tape.watch(x)
        total = tf.reduce_sum(class_ce(class_logits(classifier, x), labels))
    grad = tape.gradient(total, x)
    return tf.norm(tf.reshape(grad, [tf.shape(grad)[0], -1]), axis=1)


def gap_analysis(classifier, train_source, test_source, *, eps_grid, num_examples=1000, steps=20, batch_size=200,
                 verbose=True):
    """Accuracy under PGD (paper protocol) on train vs test over eps, and the LLV on both splits."""
    out = {"eps": [float(e) for e in eps_grid], "train_accuracy": [], "test_accuracy": [], "llv": {}}
    progress = Progress("gap analysis", 2 * len(eps_grid) + 2, unit="passes", enabled=verbose)
    for eps in eps_grid:
        for split, src in (("train", train_source), ("test", test_source)):
            acc = accuracy_under_attack(classifier, src, eps=float(eps), steps=steps, num_examples=num_examples,
                                        batch_size=batch_size)
            out[f"{split}_accuracy"].append(acc)
            progress.note(last=f"{split} eps {float(eps):g}")
            progress.update(1)
    for split, src in (("train", train_source), ("test", test_source)):
        values = [local_lipschitz(classifier, x, y).numpy() for x, y in data_lib.eval_dataset(src, batch_size,
                                                                                               num_examples)]
        out["llv"][split] = np.concatenate(values).tolist()
        progress.note(last=f"{split} LLV")
        progress.update(1)
    progress.close()
    out["llv_mean"] = {k: float(np.mean(v)) for k, v in out["llv"].items()}
    return out


def plot_gap(gap, path):
    """Two panels: accuracy under attack (train vs test) over eps, and LLV histograms."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    a.plot(gap["eps"], gap["train_accuracy"], "o-", label="train")
    a.plot(gap["eps"], gap["test_accuracy"], "s-", label="test")
    a.set_xlabel("eps ([-1, 1] units)")
    a.set_ylabel("accuracy under PGD")
    a.set_ylim(0, 1)
    a.legend()
    a.set_title("accuracy gap")
    top = max(max(v) for v in gap["llv"].values()) or 1.0
    bins = np.linspace(0, top, 40)
    for split in ("train", "test"):
        b.hist(gap["llv"][split], bins=bins, alpha=0.5, label=f"{split} (mean {gap['llv_mean'][split]:.3g})")
    b.set_xlabel("||d loss / d x||_2")
    b.set_title("local Lipschitz value")
    b.legend()
    fig.tight_layout()
    storage.atomic_save(path, lambda tmp: fig.savefig(tmp, dpi=100))
    plt.close(fig)
