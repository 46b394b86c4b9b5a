import contextlib

import keras
import numpy as np
import pytest
import tensorflow as tf

from robgan_tf import runtime
from robgan_tf.attacks import pgd
from robgan_tf.config import AttackConfig, FinetuneConfig, TrainConfig
from robgan_tf.models import Discriminator, Generator
from robgan_tf.training import (
    Adam,
    FineTuner,
    ResettingAdam,
    RobGAN,
    current_lr,
    make_distributed_step,
    make_finetune_optimizer,
    make_optimizers,
    weight_decay_loss,
)

K, Z = 3, 8
R = 16  # the tiny preset's smallest size: the same code paths, a smaller graph to trace


def mirrored():
    """The process's MirroredStrategy over the two logical CPUs (runtime.mirrored_strategy: one per process, as
    a second one's collectives would collide with the first's)."""
    cpus = tf.config.list_logical_devices("CPU")
    assert len(cpus) >= 2, "conftest.py splits the CPU into two logical devices"
    return runtime.mirrored_strategy([c.name for c in cpus[:2]])


def _data(n=32, batch=8, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, (n, R, R, 1)).astype(np.float32)
    y = rng.integers(0, K, n).astype(np.int32)
    return tf.data.Dataset.from_tensor_slices((x, y)).repeat().batch(batch, drop_remainder=True)


def _model(mode="robgan", **cfg_kwargs):
    attack = cfg_kwargs.pop("attack", AttackConfig(eps=0.05, steps=2, loss="ce" if mode == "advtrain" else "two_head"))
    cfg = TrainConfig(method=mode, attack=attack, **cfg_kwargs)
    g = Generator(K, R, "tiny", channels=1, z_dim=Z) if mode != "advtrain" else None
    model = RobGAN(Discriminator(K, R, "tiny", channels=1), g, cfg)
    model.compile(*make_optimizers(cfg))
    return model


def _snapshot(model):
    return [w.numpy().copy() for w in model.trainable_weights]


@pytest.mark.parametrize("mode", ["robgan", "gan", "advtrain"])
def test_each_mode_trains_weights_with_finite_losses(mode):
    model = _model(mode)
    d_before = [w.numpy().copy() for w in model.discriminator.trainable_weights]
    hist = model.fit(_data(), steps_per_epoch=3, epochs=1, verbose=0).history
    assert all(np.isfinite(v[-1]) for v in hist.values())
    changed = [np.abs(w.numpy() - b).max() > 0 for w, b in zip(model.discriminator.trainable_weights, d_before)]
    if mode == "advtrain":
        assert set(hist) == {"d_loss", "real_class_acc"}
        assert sum(changed) == len(changed) - 2  # everything but the unused real/fake head
    else:
        assert all(changed)
        assert {"g_loss", "real_fake_acc", "fake_class_acc"} <= set(hist)
        assert int(model.g_optimizer.iterations) == 3


@pytest.mark.parametrize("n_dis", [1, 3])
def test_reuse_fake_saves_one_generator_pass_and_still_trains_g_through_the_updated_d(n_dis, monkeypatch):
    calls = {}
    x, y = next(iter(_data(batch=8 * n_dis)))
    for reuse in (False, True):
        model = _model("robgan", n_dis=n_dis, reuse_fake=reuse)
        g_before = [w.numpy().copy() for w in model.generator.trainable_weights]
        real_call = model.generator.call
        count = [0]

        def counting(*args, **kwargs):
            count[0] += 1
            return real_call(*args, **kwargs)

        monkeypatch.setattr(model.generator, "call", counting)
        logs = model.train_step((x, y))  # eagerly: every forward pass is a Python call
        calls[reuse] = count[0]
        assert all(np.isfinite(float(v)) for v in logs.values())
        assert int(model.d_optimizer.iterations) == n_dis and int(model.g_optimizer.iterations) == 1
        moved = [np.abs(w.numpy() - b).max() > 0 for w, b in zip(model.generator.trainable_weights, g_before)]
        assert all(moved)  # G's gradient reached every weight through D and the recorded forward pass
    assert calls == {False: n_dis + 1, True: n_dis}


def test_attack_runs_with_discriminator_in_inference_mode():
    """The attack must not move BN statistics or SN vectors (D in inference mode)."""
    model = _model("robgan")
    x, y = next(iter(_data()))
    state = [w.numpy().copy() for w in model.discriminator.non_trainable_weights]
    adv = model.attack(x, y)
    assert np.abs((adv - x).numpy()).max() <= 0.05 + 1e-6
    for w, s in zip(model.discriminator.non_trainable_weights, state):
        np.testing.assert_array_equal(w.numpy(), s)


def test_learning_rate_schedules():
    cfg = TrainConfig(method="gan", train_steps=100, n_dis=2, lr_schedule="linear")
    d_opt, g_opt = make_optimizers(cfg)
    d_opt.iterations.assign(25)
    g_opt.iterations.assign(25)  # G's schedule spans 50 of its own steps
    assert float(current_lr(d_opt)) == pytest.approx(2e-4 * 0.75)
    assert float(current_lr(g_opt)) == pytest.approx(2e-4 * 0.5)
    d_opt, _ = make_optimizers(TrainConfig(method="gan", lr_schedule="halve", halve_every=10))
    d_opt.iterations.assign(25)
    assert float(current_lr(d_opt)) == pytest.approx(2e-4 / 4)
    ft = make_finetune_optimizer(FinetuneConfig(steps=60))
    for step, lr in ((0, 1e-3), (25, 1e-4), (45, 1e-5), (55, 1e-6)):
        ft.iterations.assign(step)
        assert float(current_lr(ft)) == pytest.approx(lr)


def test_linear_decay_start_and_step_schedule():
    cfg = TrainConfig(method="gan", train_steps=100, lr_schedule="linear", lr_decay_start=60)
    d_opt, _ = make_optimizers(cfg)
    for it, factor in ((0, 1.0), (60, 1.0), (80, 0.5), (100, 0.0)):
        d_opt.iterations.assign(it)
        assert float(current_lr(d_opt)) == pytest.approx(2e-4 * factor)
    madry = TrainConfig(method="advtrain", attack=AttackConfig(eps=0.06, steps=2, loss="ce"),
                        optimizer="sgd", lr_d=0.1, lr_schedule="step", lr_boundaries=(40, 60), weight_decay=2e-4)
    d_opt, g_opt = make_optimizers(madry)
    assert isinstance(d_opt, keras.optimizers.SGD) and d_opt.momentum == 0.9 and g_opt is None
    for it, lr in ((39, 0.1), (40, 0.01), (59, 0.01), (60, 0.001)):
        d_opt.iterations.assign(it)
        assert float(current_lr(d_opt)) == pytest.approx(lr)
    with pytest.raises(ValueError, match="lr_boundaries"):
        TrainConfig(lr_schedule="step")
    with pytest.raises(ValueError, match="reset_adam"):
        TrainConfig(reset_adam=True)  # a constant lr is never lowered


def test_fused_adam_builds_the_step_scalars_once_per_update_and_anew_for_the_next():
    """The step count, the betas and their powers, lr and eps are shared by every variable of one update (two
    tf.pow per update, not two per variable), and rebuilt for the next update in the same graph (n_dis D updates
    per step): two updates traced together make Keras' Adam's two updates."""
    init = [np.full([3], 1.0 + k, np.float32) for k in range(4)]
    grads = [tf.constant([0.5, -1.0, 2.0]) * (k + 1) for k in range(4)]

    def two_updates(make_opt):
        vs = [tf.Variable(v) for v in init]
        opt = make_opt(learning_rate=0.1)
        opt.build(vs)
        f = tf.function(lambda: [opt.apply(grads, vs), opt.apply([g * -0.5 for g in grads], vs)], autograph=False)
        ops = [op.type for op in f.get_concrete_function().graph.get_operations()]
        f()
        return ops, [v.numpy() for v in vs]

    ops, got = two_updates(Adam)
    assert ops.count("ResourceApplyAdam") == 8 and ops.count("Pow") == 4
    for g, k in zip(got, two_updates(keras.optimizers.Adam)[1]):
        np.testing.assert_allclose(g, k, rtol=1e-6, atol=1e-7)


def test_fused_adam_is_keras_adam_on_the_summed_gradient_of_repeated_rows():
    """training.Adam (one ResourceApplyAdam per variable) makes Keras' Adam updates to float32 rounding -- for a
    dense gradient, a decaying lr, in one process and under MirroredStrategy -- and for a gathered variable whose
    rows repeat in a batch (conditional BN's per-class gamma and beta) it is Adam on the summed gradient, as torch's
    Adam is: Keras' Adam squares each repeated row's slice separately (sum of g_i^2 instead of (sum of g_i)^2)."""
    rng = np.random.default_rng(0)
    init_w, init_t = rng.normal(size=(6, 5)).astype(np.float32), rng.normal(size=(4, 5)).astype(np.float32)
    xs = [rng.normal(size=(4, 6)).astype(np.float32) for _ in range(6)]
    ids = [np.array([0, 0, 2, 3], np.int32)] * 6  # row 0 twice in every batch

    def train(make_opt, strategy=None, dense=False):
        scope = strategy.scope() if strategy else contextlib.nullcontext()
        replicas = strategy.num_replicas_in_sync if strategy else 1
        with scope:
            w, table = tf.Variable(init_w), tf.Variable(init_t)
            opt = make_opt(learning_rate=keras.optimizers.schedules.ExponentialDecay(0.05, 2, 0.5),
                           beta_1=0.5, beta_2=0.9, epsilon=1e-3)
            opt.build([w, table])

        @tf.function(autograph=False)
        def step(x, i):
            def replica(x, i):
                with tf.GradientTape() as tape:
                    loss = tf.reduce_sum(tf.tanh(x @ w) * tf.gather(table, i)) / replicas  # replicas' grads add up
                grads = tape.gradient(loss, [w, table])
                assert isinstance(grads[1], tf.IndexedSlices)
                opt.apply([tf.convert_to_tensor(g) for g in grads] if dense else grads, [w, table])
            (strategy.run(replica, (x, i)) if strategy else replica(x, i))

        for x, i in zip(xs, ids):
            step(tf.constant(x), tf.constant(i))
        return w.numpy(), table.numpy()

    want = train(keras.optimizers.Adam, dense=True)
    assert np.abs(want[0] - init_w).max() > 0.1 and np.abs(want[1] - init_t).max() > 0.1
    for got in (train(Adam), train(Adam, mirrored())):
        for g, k in zip(got, want):
            np.testing.assert_allclose(g, k, rtol=1e-5, atol=1e-6)
    keras_sparse = train(keras.optimizers.Adam)
    assert np.abs(keras_sparse[1][0] - want[1][0]).max() > 1e-3  # the repeated row: Keras' own second moment
    np.testing.assert_array_equal(keras_sparse[1][1], init_t[1])  # a row never gathered: untouched by both
    np.testing.assert_array_equal(want[1][1], init_t[1])


def test_resetting_adam_equals_a_freshly_created_adam_at_each_restart():
    """The authors re-create Adam when they halve the lr; ResettingAdam must land on the same weights."""
    grads = [tf.constant([0.3, -1.0, 2.0]) * (1 + 0.5 * i) * (-1) ** i for i in range(7)]
    init = np.array([1.0, -2.0, 0.5], np.float32)
    v = tf.Variable(init)
    opt = ResettingAdam(restart_every=3, learning_rate=0.1, beta_1=0.0, beta_2=0.9, epsilon=1e-8)
    for g in grads:
        opt.apply([g], [v])
    ref = tf.Variable(init)
    for start in range(0, 7, 3):  # a brand-new Adam for steps 0-2, 3-5 and 6
        fresh = keras.optimizers.Adam(learning_rate=0.1, beta_1=0.0, beta_2=0.9, epsilon=1e-8)
        for g in grads[start:start + 3]:
            fresh.apply([g], [ref])
    np.testing.assert_allclose(v.numpy(), ref.numpy(), rtol=1e-6)
    kept = tf.Variable(init)  # and it differs from an Adam that keeps its moments
    plain = keras.optimizers.Adam(learning_rate=0.1, beta_1=0.0, beta_2=0.9, epsilon=1e-8)
    for g in grads:
        plain.apply([g], [kept])
    assert np.abs(kept.numpy() - v.numpy()).max() > 1e-3
    # the authors' fine-tuning stages restart too
    ft = make_finetune_optimizer(FinetuneConfig(steps=60))
    assert isinstance(ft, ResettingAdam) and ft.restart_at == (20, 40, 50) and ft.epsilon == 1e-8


def test_weight_decay_is_half_the_squared_kernel_norm_and_skips_biases():
    kernel, bias = tf.Variable(tf.fill([2, 3], 2.0)), tf.Variable(tf.fill([3], 5.0))
    assert float(weight_decay_loss([kernel, bias], 2e-4)) == pytest.approx(2e-4 * 0.5 * 6 * 4.0)
    assert weight_decay_loss([kernel, bias], 0.0) == 0.0


def _train_steps(strategy, batches, init, preset, eps, steps):
    with strategy.scope():
        cfg = TrainConfig(method="advtrain", attack=AttackConfig(eps=eps, steps=2, loss="ce"))
        model = RobGAN(Discriminator(K, R, preset, channels=1), None, cfg)
        # SGD, not Adam: Adam is invariant to the loss scale, so it would hide exactly the bug this
        # test is for (a per-replica mean where the global-batch mean belongs).
        model.compile(keras.optimizers.SGD(0.01))
        for w, v in zip(model.discriminator.weights, init):  # identical start for both strategies
            w.assign(v)
    ds = tf.data.Dataset.from_tensor_slices(batches).batch(8, drop_remainder=True)
    it = iter(strategy.experimental_distribute_dataset(ds))
    step = make_distributed_step(model, strategy)
    for _ in range(steps):
        step(it)
    return model


def test_two_replicas_match_one_replica_on_the_same_global_batch():
    """Losses over the GLOBAL batch: 2 replicas compute what 1 device does (SN D, PGD on)."""
    preset, eps, steps, rtol = "tiny", 0.05, 2, 1e-3
    cpus = tf.config.list_logical_devices("CPU")
    ref = Discriminator(K, R, preset, channels=1)
    ref.build_by_calling()
    init = [w.numpy() for w in ref.weights]
    rng = np.random.default_rng(0)
    batches = (rng.uniform(-1, 1, (16, R, R, 1)).astype(np.float32), rng.integers(0, K, 16).astype(np.int32))
    one = _train_steps(tf.distribute.OneDeviceStrategy(cpus[0].name), batches, init, preset, eps, steps)
    two = _train_steps(mirrored(), batches, init, preset, eps, steps)
    # The two updates agree to rtol of the update's size (a per-replica mean instead of the global
    # one would make them differ by 100%).
    moved = 0.0
    for a, b, w0 in zip(one.discriminator.weights, two.discriminator.weights, init):
        update = np.abs(a.numpy() - w0).max()
        assert np.abs(a.numpy() - b.numpy()).max() <= rtol * update + 1e-6, a.path
        moved = max(moved, update)
    assert moved > 1e-3
    # every replica holds the same SN vectors
    for w in two.discriminator.non_trainable_weights:
        local = [t.numpy() for t in two.distribute_strategy.experimental_local_results(w.value)]
        assert len(local) == 2
        np.testing.assert_array_equal(local[0], local[1], err_msg=w.path)


def test_batchnorm_moving_statistics_identical_on_every_replica():
    strategy = mirrored()
    with strategy.scope():
        cfg = TrainConfig(method="advtrain", attack=AttackConfig(eps=0.05, steps=1, loss="ce"))
        model = RobGAN(Discriminator(K, 32, "reference", channels=1), None, cfg)
        model.compile(*make_optimizers(cfg))
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (16, 32, 32, 1)).astype(np.float32)
    x[8:] *= 0.1  # the second replica's half of each batch has very different statistics
    ds = tf.data.Dataset.from_tensor_slices((x, rng.integers(0, K, 16).astype(np.int32))).batch(16)
    make_distributed_step(model, strategy)(iter(strategy.experimental_distribute_dataset(ds)))
    stats = [w for w in model.discriminator.non_trainable_weights if "moving" in w.path]
    assert len(stats) == 2 * 10  # BN after each conv: 3 + 3 (with shortcuts) + 2 + 2
    for w in stats:
        local = [t.numpy() for t in strategy.experimental_local_results(w.value)]
        np.testing.assert_array_equal(local[0], local[1], err_msg=w.path)
    first = [w for w in stats if "block1" in w.path and "moving_mean" in w.path][0]
    assert np.abs(first.numpy()).max() > 0  # it was updated


def test_mixed_precision_step_is_finite_and_loss_scaled():
    keras.mixed_precision.set_global_policy("mixed_float16")
    model = _model("robgan", precision="mixed_float16")
    assert isinstance(model.d_optimizer, keras.optimizers.LossScaleOptimizer)
    assert isinstance(model.g_optimizer, keras.optimizers.LossScaleOptimizer)
    before = _snapshot(model)
    hist = model.fit(_data(), steps_per_epoch=3, epochs=1, verbose=0).history
    assert all(np.isfinite(v[-1]) for v in hist.values())
    # the first step may overflow float16 and be skipped (the loss scale halves); later ones apply
    assert int(model.d_optimizer.iterations) >= 1 and int(model.g_optimizer.iterations) >= 1
    assert any(np.abs(a - b.numpy()).max() > 0 for a, b in zip(before, model.trainable_weights))


def test_jit_compiled_train_step_matches_the_plain_step():
    """The same two steps from the same weights and data, with and without XLA, land on the same weights."""
    attack = AttackConfig(eps=0.05, steps=2, loss="ce")
    plain, jit = _model("advtrain", attack=attack), _model("advtrain", attack=attack)
    for a, b in zip(jit.discriminator.weights, plain.discriminator.weights):
        a.assign(b)
    jit.compile(*make_optimizers(jit.config), jit_compile=True)
    batches = list(_data().take(2))
    init = [w.numpy().copy() for w in plain.discriminator.trainable_weights]
    for model, compile_it in ((plain, False), (jit, True)):
        step = tf.function(model.train_step, jit_compile=compile_it)
        for batch in batches:
            step(batch)
    moved = max(float(np.abs(a.numpy() - b).max()) for a, b in zip(plain.discriminator.trainable_weights, init))
    assert moved > 1e-4  # the steps did change the weights
    for a, b in zip(jit.discriminator.weights, plain.discriminator.weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-5, err_msg=a.path)


def test_finetuner_updates_classifier_only_in_training_mode():
    g = Generator(K, R, "tiny", channels=1, z_dim=Z)
    d = Discriminator(K, R, "tiny", channels=1)
    cfg = FinetuneConfig(steps=3, attack=AttackConfig(eps=0.05, steps=2, loss="ce"))
    ft = FineTuner(d.classifier(), g, cfg)
    ft.compile()
    g_before = [w.numpy().copy() for w in g.weights]
    u_before = d.dense_cls.u.numpy().copy()
    c_before = [w.numpy().copy() for w in d.trainable_weights]
    adv_before = d.dense_adv.layer.kernel.numpy().copy()
    hist = ft.fit(_data(), steps_per_epoch=3, epochs=1, verbose=0).history
    assert all(np.isfinite(v[-1]) for v in hist.values())
    for w, b in zip(g.weights, g_before):
        np.testing.assert_array_equal(w.numpy(), b)
    assert not np.allclose(d.dense_cls.u.numpy(), u_before)  # training-mode calls update SN
    assert any(np.abs(w.numpy() - b).max() > 0 for w, b in zip(d.trainable_weights, c_before))
    # eq. 10 is a class loss only: the real/fake head gets no gradient and must not move
    np.testing.assert_array_equal(d.dense_adv.layer.kernel.numpy(), adv_before)


@pytest.mark.parametrize("statistics", ["batch", "moving"])
def test_finetuner_samples_the_frozen_generator_with_the_chosen_statistics(statistics):
    g = Generator(K, R, "tiny", channels=1, z_dim=Z)
    g.build_by_calling()
    for v in g.non_trainable_weights:  # moving averages far from any batch's: the two modes differ
        v.assign(tf.fill(v.shape, 3.0))
    cfg = FinetuneConfig(steps=3, attack=AttackConfig(eps=0.05, steps=2, loss="ce"), g_statistics=statistics)
    ft = FineTuner(Discriminator(K, R, "tiny", channels=1).classifier(), g, cfg)
    z, y = tf.random.stateless_normal([8, Z], seed=[1, 2]), tf.constant([0, 1, 2, 0, 1, 2, 0, 1])
    fakes = ft._sample(z, y).numpy()
    clone = Generator.from_config(g.get_config())
    clone.build_by_calling()
    clone.set_weights(g.get_weights())
    training_mode = clone(z, y, training=True).numpy()  # batch statistics (and it moves the clone's averages)
    inference_mode = g(z, y, training=False).numpy()
    assert np.abs(training_mode - inference_mode).max() > 0.1
    np.testing.assert_allclose(fakes, training_mode if statistics == "batch" else inference_mode, atol=1e-6)
    assert all(np.all(v.numpy() == 3.0) for v in g.non_trainable_weights)  # G's averages never move


def test_advtrain_learns_a_robust_classifier_on_separable_data():
    rng = np.random.default_rng(0)
    n = 256
    y = rng.integers(0, 2, n).astype(np.int32)
    # class 0: dark images, class 1: bright ones; eps 0.1 cannot bridge the 0.6 gap
    x = (np.where(y[:, None, None, None] == 1, 0.3, -0.3)
         + rng.uniform(-0.2, 0.2, (n, R, R, 1))).astype(np.float32)
    cfg = TrainConfig(method="advtrain", lr_d=1e-3,
                      attack=AttackConfig(eps=0.1, steps=3, loss="ce"))
    model = RobGAN(Discriminator(2, R, "tiny", channels=1), None, cfg)
    model.compile(*make_optimizers(cfg))
    ds = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(n, seed=0).repeat().batch(32, drop_remainder=True)
    model.fit(ds, steps_per_epoch=40, epochs=1, verbose=0)
    xt, yt = x[:128], y[:128]
    adv = pgd(model.classifier, xt, yt, eps=0.1, steps=10)
    acc = np.mean(np.argmax(model.classifier(adv).numpy(), 1) == yt)
    assert acc >= 0.9


def test_config_validation():
    with pytest.raises(ValueError, match="method must be one of"):
        TrainConfig(method="wgan")
    with pytest.raises(ValueError, match="needs an attack"):
        TrainConfig(method="robgan", attack=AttackConfig(eps=0.0))
    with pytest.raises(ValueError, match="advtrain"):
        TrainConfig(method="advtrain")  # two-head attack without a GAN head
    with pytest.raises(ValueError, match="eps"):
        AttackConfig(eps=-1)
    with pytest.raises(ValueError, match="needs a generator"):
        RobGAN(Discriminator(3, 32, "tiny"), None, TrainConfig())
    # the class count and noise size are the networks' own: G and D must agree, and z_dim is G's
    with pytest.raises(ValueError, match="the generator draws 4 classes but the discriminator has 3"):
        RobGAN(Discriminator(3, R, "tiny", channels=1), Generator(4, R, "tiny", channels=1), TrainConfig())
    with pytest.raises(ValueError, match="the generator draws 4 classes but the classifier has 3"):
        FineTuner(Discriminator(3, R, "tiny", channels=1).classifier(), Generator(4, R, "tiny", channels=1),
                  FinetuneConfig())
    with pytest.raises(ValueError, match="z_dim must be >= 1"):
        Generator(3, R, "tiny", z_dim=0)
    model = RobGAN(Discriminator(3, R, "tiny", channels=1), Generator(3, R, "tiny", channels=1, z_dim=5),
                   TrainConfig())
    z, labels = model.sample_inputs(64)
    assert z.shape == (64, 5) and 0 <= int(tf.reduce_min(labels)) and int(tf.reduce_max(labels)) == 2


def test_sngan_baseline_n_dis_d_updates_per_g_update_projection_hinge_and_ema():
    """SN-GAN's baseline (the gan method, a projection D, the hinge loss, n_dis D updates per G update) with an
    EMA generator, two steps of fit: D and G counts, the projection embedding trained through the real/fake logit
    alone, and the EMA the exponential average of G's weights after each G update."""
    from robgan_tf.losses import LossConfig

    sngan = LossConfig(gan_loss="hinge", d_real_adv=1.0, d_real_cls=0.0, d_fake_adv=1.0, g_adv=1.0, g_cls=0.0)
    cfg = TrainConfig(method="gan", loss=sngan, n_dis=2, ema_decay=0.75)
    model = RobGAN(Discriminator(K, R, "tiny", channels=1, head="projection"),
                   Generator(K, R, "tiny", channels=1, z_dim=Z), cfg)
    model.compile(*make_optimizers(cfg))
    assert model.examples_per_step(8) == 16
    embed_before = model.discriminator.embed.layer.embeddings.numpy().copy()
    ema = [w.numpy().copy() for w in model.generator.weights]  # the EMA starts at G's initial weights
    for step in (1, 2):  # one step per fit call: the same traced step (Keras keeps its train function)
        hist = model.fit(_data(batch=16, seed=step), steps_per_epoch=1, epochs=1, verbose=0).history
        assert np.isfinite(hist["d_loss"][-1]) and np.isfinite(hist["g_loss"][-1])
        assert int(model.d_optimizer.iterations) == 2 * step and int(model.g_optimizer.iterations) == step
        ema = [0.75 * e + 0.25 * w.numpy() for e, w in zip(ema, model.generator.weights)]
        for e, v in zip(ema, model.ema_weights):
            np.testing.assert_allclose(v.numpy(), e, rtol=1e-5, atol=1e-6)
    assert np.abs(model.discriminator.embed.layer.embeddings.numpy() - embed_before).max() > 0
    g = model.sampling_generator()  # the EMA weights in a model of their own
    assert g is not model.generator
    for w, v in zip(g.weights, model.ema_weights):
        np.testing.assert_array_equal(w.numpy(), v.numpy())
    z, y = tf.random.normal([2, Z]), tf.constant([0, 2])
    assert not np.allclose(g(z, y).numpy(), model.generator(z, y).numpy())


def test_keras_builtin_schedules_follow_the_closed_forms_at_every_update():
    from robgan_tf.training import make_schedule

    steps = np.arange(0, 121)
    cases = {  # the closed forms of robgan_tf 0.3's own schedules, which these Keras built-ins replace
        ("linear", 0): 1e-3 * np.clip(1 - steps / 100, 0, 1),
        ("linear", 60): 1e-3 * np.clip(1 - (steps - 60) / 40, 0, 1),
        ("halve", 0): 1e-3 * 0.5 ** np.floor(steps / 30),
        ("step", 0): 1e-3 * 0.1 ** ((steps >= 40).astype(int) + (steps >= 90).astype(int)),
    }
    for (kind, start), expected in cases.items():
        schedule = make_schedule(kind, 1e-3, 100, halve_every=30, decay_start=start, boundaries=(40, 90))
        assert isinstance(schedule, keras.optimizers.schedules.LearningRateSchedule)
        got = np.array([float(schedule(tf.constant(int(s), tf.int64))) for s in steps])
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-12, err_msg=f"{kind} {start}")
    assert type(make_schedule("halve", 1e-3, 100, halve_every=30)).__name__ == "ExponentialDecay"
    assert type(make_schedule("step", 1e-3, 100, boundaries=(40,))).__name__ == "PiecewiseConstantDecay"


class _OldHalving(keras.optimizers.schedules.LearningRateSchedule):
    """A schedule of robgan_tf's own, as 0.3 had (there: Halving): a Python object with no variables."""

    def __call__(self, step):
        return 1e-3 * tf.pow(0.5, tf.floor(tf.cast(step, tf.float32) / 30.0))


def test_schedules_hold_no_checkpoint_state_so_older_runs_restore(tmp_path):
    """A checkpoint carries the optimizer's variables, never its schedule: one written under a schedule of
    robgan_tf's own (0.3 and earlier) restores exactly into an optimizer on the Keras built-in."""
    from robgan_tf.training import make_optimizer, make_schedule

    var = tf.Variable(tf.ones([3]))
    old = make_optimizer("adam", _OldHalving())
    old.apply_gradients([(tf.constant([1.0, 2.0, 3.0]), var)])
    path = tf.train.Checkpoint(opt=old, var=var).save(str(tmp_path / "ckpt"))
    new_var = tf.Variable(tf.zeros([3]))
    new = make_optimizer("adam", make_schedule("halve", 1e-3, 100, halve_every=30))
    new.build([new_var])
    tf.train.Checkpoint(opt=new, var=new_var).restore(path).assert_existing_objects_matched()
    assert int(new.iterations.numpy()) == 1
    np.testing.assert_array_equal(new_var.numpy(), var.numpy())
    assert len(old.variables) == len(new.variables)
    for a, b in zip(old.variables, new.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
