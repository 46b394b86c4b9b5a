"""One worker of the 2-process MultiWorkerMirroredStrategy test (run by test_training.py).

argv: worker index, port0, port1, output .npz path. Trains Rob-GAN for 3 steps with the custom loop
and saves the final D and G weights.
"""
import json
import os
import sys

os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
index, port0, port1, out = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
os.environ["TF_CONFIG"] = json.dumps({
    "cluster": {"worker": [f"127.0.0.1:{port0}", f"127.0.0.1:{port1}"]},
    "task": {"type": "worker", "index": index},
})

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from robgan_tf.config import AttackConfig, TrainConfig  # noqa: E402
from robgan_tf.models import Discriminator, Generator  # noqa: E402
from robgan_tf.training import RobGAN, make_distributed_step, make_optimizers  # noqa: E402

strategy = tf.distribute.MultiWorkerMirroredStrategy()
cfg = TrainConfig(num_classes=3, z_dim=8, attack=AttackConfig(eps=0.05, steps=2), seed=3)
with strategy.scope():
    model = RobGAN(Discriminator(3, 32, "tiny", channels=1), Generator(3, 32, "tiny", channels=1, z_dim=8), cfg)
    model.compile(*make_optimizers(cfg))
rng = np.random.default_rng(index)  # each worker reads different data
x = rng.uniform(-1, 1, (64, 32, 32, 1)).astype(np.float32)
y = rng.integers(0, 3, 64).astype(np.int32)
ds = tf.data.Dataset.from_tensor_slices((x, y)).repeat().batch(8, drop_remainder=True)
opts = tf.data.Options()
opts.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
it = iter(strategy.experimental_distribute_dataset(ds.with_options(opts)))
step = make_distributed_step(model, strategy)
for _ in range(3):
    logs = step(it)
weights = {f"d{i}": w.numpy() for i, w in enumerate(model.discriminator.weights)}
weights.update({f"g{i}": w.numpy() for i, w in enumerate(model.generator.weights)})
weights["d_loss"] = np.array(float(logs["d_loss"]))
np.savez(out, **weights)
