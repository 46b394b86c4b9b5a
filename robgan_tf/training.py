"""Rob-GAN training (paper section 3.3) and eq. 10 fine-tuning, as Keras models with custom steps.

`RobGAN.train_step` is one iteration: n_dis D updates, each on its own real batch (PGD-attacked
first by the robgan/advtrain methods), then one G update. It runs under `fit` and under `strategy.run` (see
`make_distributed_step`, the loop used for MultiWorkerMirroredStrategy, where Keras' own `fit` is
unreliable). Losses are averaged over the GLOBAL batch because gradients are summed across replicas.
"""
from __future__ import annotations

import keras
import tensorflow as tf

from robgan_tf import losses as L
from robgan_tf.attacks import pgd
from robgan_tf.config import FinetuneConfig, TrainConfig
from robgan_tf.models import sampler
from robgan_tf.precision import loss_scaled


# ----------------------------------------------------------------------------- schedules / optimizers
# The schedules are Keras' own (PolynomialDecay, ExponentialDecay, PiecewiseConstantDecay); only the delayed start
# of SN-GAN's linear decay needs a wrapper. Schedules hold no variables, so checkpoints are the same whichever is
# used (runs of 0.3.0 and earlier, which used robgan_tf's own LinearDecay / Halving / StepDecay, restore as before).
@keras.saving.register_keras_serializable(package="robgan_tf")
class Delayed(keras.optimizers.schedules.LearningRateSchedule):
    """schedule(max(step - start, 0)): the lr stays at schedule(0) for `start` updates, then follows it."""

    def __init__(self, schedule, start):
        self.schedule, self.start = schedule, int(start)

    def __call__(self, step):
        return self.schedule(tf.maximum(tf.cast(step, tf.int64) - self.start, 0))

    def get_config(self):
        return {"schedule": keras.optimizers.schedules.serialize(self.schedule), "start": self.start}

    @classmethod
    def from_config(cls, config):
        return cls(keras.optimizers.schedules.deserialize(config["schedule"]), config["start"])


def _handle(variable):
    """The resource handle of a Keras or tf.Variable (inside tf.distribute's update(), the local replica's)."""
    return (variable.value if isinstance(variable, keras.Variable) else variable).handle


@keras.saving.register_keras_serializable(package="robgan_tf")
class Adam(keras.optimizers.Adam):
    """Keras' Adam, each variable updated by TensorFlow's fused ResourceApplyAdam kernel.

    The update is Keras' own, term for term: lr_t = lr * sqrt(1 - b2^t) / (1 - b1^t); m += (g - m)(1 - b1);
    v += (g^2 - v)(1 - b2); w -= lr_t * m / (sqrt(v) + eps), with the same slot variables (checkpoints
    are interchangeable). On dense gradients it agrees with keras.optimizers.Adam to float32 rounding, not bit
    for bit (the kernel evaluates the same expressions in one pass). On a gathered variable whose rows repeat
    in a batch (conditional BN's per-class gamma and beta) g is the summed gradient, as in torch; Keras' Adam
    squares each example's slice before summing them instead (tests/test_training.py). One op per variable
    instead of about thirty makes a train step's graph about a fifth smaller, so it traces and optimises
    faster, and a GPU launches one kernel per variable instead of about ten.
    """

    _shared = None  # during one update of all variables: {(device, dtype): the scalars every update reads}

    def _distributed_tf_update_step(self, distribution, grads_and_vars, learning_rate):
        # The step count, betas, their powers, lr and eps are the same for every variable of one update: built
        # once per device and dtype instead of once per variable (an eighth of a train step's graph otherwise).
        self._shared = {}
        try:
            return super()._distributed_tf_update_step(distribution, grads_and_vars, learning_rate)
        finally:
            self._shared = None

    def _scalars(self, variable, learning_rate):
        shared = self._shared if self._shared is not None else {}  # outside an update: built for this variable
        key = (variable.device, variable.dtype)
        if key not in shared:
            dtype = variable.dtype
            t = tf.cast(self.iterations + 1, dtype)
            b1, b2 = tf.cast(self.beta_1, dtype), tf.cast(self.beta_2, dtype)
            shared[key] = dict(beta1_power=tf.pow(b1, t), beta2_power=tf.pow(b2, t), lr=tf.cast(learning_rate, dtype),
                               beta1=b1, beta2=b2, epsilon=tf.cast(self.epsilon, dtype))
        return shared[key]

    def update_step(self, gradient, variable, learning_rate):
        if self.amsgrad:
            return super().update_step(gradient, variable, learning_rate)
        index = self._get_variable_index(variable)
        tf.raw_ops.ResourceApplyAdam(
            var=_handle(variable), m=_handle(self._momentums[index]), v=_handle(self._velocities[index]),
            grad=tf.cast(tf.convert_to_tensor(gradient), variable.dtype), **self._scalars(variable, learning_rate))


@keras.saving.register_keras_serializable(package="robgan_tf")
class ResettingAdam(Adam):
    """Adam that starts afresh -- zero moments, bias correction from step 1 -- at given update counts.

    The authors lower a learning rate by re-creating their torch Adam, which discards its moments; this
    does the same in-graph (so it works under tf.distribute and resumes from a checkpoint): at the first
    update of each stage the moments are zeroed, and the bias correction uses the stage-local step s
    instead of the global one t (by rescaling the learning rate passed to Keras' own Adam update).
    Stages start every `restart_every` updates and at each count in `restart_at`.
    """

    def __init__(self, restart_every=0, restart_at=(), **kwargs):
        super().__init__(**kwargs)
        self.restart_every, self.restart_at = int(restart_every), tuple(int(b) for b in restart_at)

    def _stage_start(self):
        it = tf.cast(self.iterations, tf.int64)
        start = tf.zeros([], tf.int64)
        if self.restart_every:
            start = (it // self.restart_every) * self.restart_every
        if self.restart_at:
            at = tf.constant(self.restart_at, tf.int64)
            start = tf.maximum(start, tf.reduce_max(tf.where(at <= it, at, tf.zeros_like(at))))
        return start

    def update_step(self, gradient, variable, learning_rate):
        it = tf.cast(self.iterations, tf.int64)
        start = self._stage_start()
        index = self._get_variable_index(variable)
        for slot in (self._momentums[index], self._velocities[index]):
            self.assign(slot, tf.where(it == start, tf.zeros_like(slot), slot))
        dtype = variable.dtype
        t = tf.cast(it + 1, dtype)
        s = tf.cast(it - start + 1, dtype)
        b1, b2 = tf.cast(self.beta_1, dtype), tf.cast(self.beta_2, dtype)
        # Keras applies alpha_t = lr * sqrt(1 - b2^t) / (1 - b1^t); a fresh Adam would use s for t.
        fix = (tf.sqrt(1 - b2 ** s) / (1 - b1 ** s)) / (tf.sqrt(1 - b2 ** t) / (1 - b1 ** t))
        super().update_step(gradient, variable, tf.cast(learning_rate, dtype) * fix)

    def get_config(self):
        config = super().get_config()
        config.update(restart_every=self.restart_every, restart_at=list(self.restart_at))
        return config


def make_schedule(kind, lr, total_steps, halve_every=0, decay_start=0, boundaries=(), factor=0.1):
    """A learning rate or schedule. Every count is in this optimizer's own updates."""
    if kind == "constant":
        return float(lr)
    schedules = keras.optimizers.schedules
    if kind == "linear":  # lr until decay_start, then linearly to 0 at total_steps (SN-GAN)
        decay = schedules.PolynomialDecay(float(lr), max(int(total_steps) - int(decay_start), 1), 0.0, power=1.0)
        return Delayed(decay, decay_start) if decay_start else decay
    if kind == "halve":  # lr * 0.5 ** floor(step / every): the authors' "halve every 50 epochs"
        return schedules.ExponentialDecay(float(lr), max(int(halve_every), 1), 0.5, staircase=True)
    if kind == "step":  # lr * factor ** (boundaries <= step): the drop lands AT each boundary, where ResettingAdam
        # restarts; PiecewiseConstantDecay drops after its boundary, hence b - 1
        bounds = [int(b) - 1 for b in boundaries]
        return schedules.PiecewiseConstantDecay(bounds, [float(lr) * float(factor) ** i for i in range(len(bounds) + 1)])
    raise ValueError(f"Unknown lr schedule {kind!r}.")


def make_optimizer(kind, lr, *, beta1=0.9, beta2=0.999, epsilon=1e-8, momentum=0.9, loss_scale=False,
                   restart_every=0, restart_at=(), name="optimizer"):
    """Adam (restarting its moments at the given counts when any are given) or SGD with momentum,
    loss-scaled for float16 (compile() would wrap only self.optimizer; both GAN optimizers must be:
    BUILD_NOTES, Distribution). bfloat16 needs no loss scaling."""
    if kind == "adam":
        adam_args = dict(learning_rate=lr, beta_1=beta1, beta_2=beta2, epsilon=epsilon, name=name)
        opt = (ResettingAdam(restart_every, restart_at, **adam_args) if restart_every or restart_at
               else Adam(**adam_args))
    elif kind == "sgd":
        opt = keras.optimizers.SGD(learning_rate=lr, momentum=momentum, name=name)
    else:
        raise ValueError(f"optimizer must be 'adam' or 'sgd', got {kind!r}.")
    return keras.optimizers.LossScaleOptimizer(opt, name=f"{name}_ls") if loss_scale else opt


def make_optimizers(config: TrainConfig):
    """(d_optimizer, g_optimizer) with the configured kind, schedules and restarts.

    Counts in the config are D updates; G takes one step per n_dis D updates, so its schedule and
    restarts are the same points in G's own steps.
    """
    n = config.n_dis
    g_steps = max(config.train_steps // n, 1)

    def build(own_steps, per, lr, name):
        boundaries = tuple(max(b // per, 1) for b in config.lr_boundaries)
        halve_every = max(config.halve_every // per, 1)
        schedule = make_schedule(config.lr_schedule, lr, own_steps, halve_every, config.lr_decay_start // per,
                                 boundaries, config.lr_step_factor)
        restart_every, restart_at = 0, ()
        if config.reset_adam and config.lr_schedule == "halve":
            restart_every = halve_every
        if config.reset_adam and config.lr_schedule == "step":
            restart_at = boundaries
        return make_optimizer(config.optimizer, schedule, beta1=config.beta1, beta2=config.beta2,
                              epsilon=config.adam_epsilon, momentum=config.momentum,
                              loss_scale=loss_scaled(config.precision), restart_every=restart_every,
                              restart_at=restart_at, name=name)

    d_opt = build(config.train_steps, 1, config.lr_d, "d_opt")
    g_opt = build(g_steps, n, config.lr_g, "g_opt") if config.uses_generator else None
    return d_opt, g_opt


def weight_decay_loss(variables, weight_decay):
    """weight_decay * sum ||W||^2 / 2 over kernels (rank >= 2: convs, dense layers, embeddings; no biases
    or BN), as Madry et al.'s code adds it to the loss; divided by the replica count because gradients are
    summed across replicas."""
    if not weight_decay:
        return 0.0
    replicas = tf.distribute.get_replica_context().num_replicas_in_sync if tf.distribute.has_strategy() else 1
    kernels = [tf.cast(v, tf.float32) for v in variables if len(v.shape) >= 2]
    return weight_decay * tf.add_n([tf.nn.l2_loss(k) for k in kernels]) / replicas


def current_lr(optimizer):
    """The learning rate an optimizer will use for its next step (a float tensor)."""
    inner = getattr(optimizer, "inner_optimizer", optimizer)
    lr = inner._learning_rate  # the schedule or the constant variable
    if isinstance(lr, keras.optimizers.schedules.LearningRateSchedule):
        return lr(inner.iterations)
    return tf.convert_to_tensor(inner.learning_rate)


def _apply(optimizer, tape, scaled_loss, variables):
    """Differentiates `optimizer.scale_loss(loss)` (computed INSIDE the tape, or the scaling is
    invisible to it) and applies; variables the loss does not reach (e.g. the unused real/fake
    head in advtrain) are skipped."""
    grads = tape.gradient(scaled_loss, variables)
    pairs = [(g, v) for g, v in zip(grads, variables) if g is not None]
    optimizer.apply([g for g, _ in pairs], [v for _, v in pairs])


def _accuracy(logits, labels):
    return tf.reduce_mean(tf.cast(tf.equal(tf.argmax(logits, -1, output_type=tf.int32),
                                           tf.cast(labels, tf.int32)), tf.float32))


# ----------------------------------------------------------------------------- Rob-GAN
class RobGAN(keras.Model):
    """Generator + discriminator + PGD attacker, trained end to end (Liu & Hsieh, 2019).

    Build it (and compile it) inside `strategy.scope()` when distributing. `compile(d_optimizer,
    g_optimizer)` takes both optimizers; `make_optimizers(config)` builds the defaults.
    """

    def __init__(self, discriminator, generator=None, config: TrainConfig = None, **kwargs):
        super().__init__(**kwargs)
        if config is None:
            raise ValueError("RobGAN needs a TrainConfig.")
        if config.uses_generator and generator is None:
            raise ValueError(f"method {config.method!r} needs a generator; only 'advtrain' runs without one.")
        if config.method == "robgan" and config.attack.loss == "two_head" and discriminator.head != "acgan":
            raise ValueError("The two-head attack loss needs the AC-GAN head; use attack loss 'ce' with "
                             "the projection discriminator.")
        if config.uses_generator and generator.num_classes != discriminator.num_classes:
            raise ValueError(f"the generator draws {generator.num_classes} classes but the discriminator has "
                             f"{discriminator.num_classes}.")
        self.config = config
        self.discriminator = discriminator
        self.generator = generator if config.uses_generator else None
        self.classifier = discriminator.classifier()
        discriminator.build_by_calling()
        if self.generator is not None:
            self.generator.build_by_calling()
        # Distribution-aware, checkpointable RNG for z, fake labels and random starts: each replica
        # draws its own stream inside strategy.run.
        self.rng = tf.random.Generator.from_seed(config.seed)
        self.ema_weights, self._ema_generator = [], None
        if self.generator is not None and config.ema_decay is not None:
            for w in self.generator.weights:
                ema = self.add_weight(shape=w.shape, initializer="zeros", trainable=False,
                                      aggregation="only_first_replica", name="ema_" + w.name)
                ema.assign(w)
                self.ema_weights.append(ema)
            # The model sampled and exported with: built once (in the caller's strategy scope), its
            # weights refreshed from the EMA variables by sampling_generator().
            self._ema_generator = type(generator).from_config(generator.get_config())
            self._ema_generator.build_by_calling()
        names = ["d_loss", "real_class_acc"]
        if self.generator is not None:
            names += ["g_loss", "real_fake_acc", "fake_class_acc"]
        self._trackers = {n: keras.metrics.Mean(name=n) for n in names}
        self.built = True

    @property
    def metrics(self):
        return list(self._trackers.values())

    # The class count and the noise size are the networks' own (one authority: the models).
    @property
    def num_classes(self):
        return self.discriminator.num_classes

    @property
    def z_dim(self):
        return self.generator.z_dim if self.generator is not None else None

    def compile(self, d_optimizer, g_optimizer=None, jit_compile=False, **kwargs):
        if self.generator is not None and g_optimizer is None:
            raise ValueError(f"method {self.config.method!r} trains a generator; pass g_optimizer.")
        super().compile(optimizer=d_optimizer, jit_compile=jit_compile, **kwargs)
        self.d_optimizer, self.g_optimizer = d_optimizer, g_optimizer
        # Create slot variables now, inside the caller's strategy scope, not lazily in the traced
        # step (BUILD_NOTES.md, Distribution).
        d_optimizer.build(self.discriminator.trainable_variables)
        if g_optimizer is not None:
            g_optimizer.build(self.generator.trainable_variables)

    # -- pieces of a step
    def attack(self, images, labels):
        """PGD on the real batch with D in inference mode (identity for the 'gan' method)."""
        a = self.config.attack
        if not self.config.uses_attack:
            return tf.cast(images, tf.float32)
        target = self.discriminator if a.loss == "two_head" else self.classifier
        return pgd(target, images, labels, eps=a.eps, steps=a.steps, step_size=a.step_size,
                   random_start=a.random_start, restarts=a.restarts, loss=a.loss, rng=self.rng)

    def sample_inputs(self, batch_size):
        z = self.rng.normal([batch_size, self.z_dim])
        labels = self.rng.uniform([batch_size], 0, self.num_classes, dtype=tf.int32)
        return z, labels

    def d_step(self, x_real, labels, fakes=None):
        """One D update on (attacked) reals and fakes: `fakes` (images, labels) when given (--reuse_fake), else a
        fresh generator batch."""
        cfg, d = self.config, self.discriminator
        b = tf.shape(x_real)[0]
        if fakes is not None:
            x_fake, y_fake = tf.stop_gradient(fakes[0]), fakes[1]
        elif self.generator is not None:
            z, y_fake = self.sample_inputs(b)
            x_fake = tf.stop_gradient(self.generator(z, y_fake, training=True))
        with tf.GradientTape() as tape:
            real_logit, real_cls = d(x_real, labels, training=True)
            if self.generator is None:  # advtrain: the classifier's CE on attacked reals only
                per_example = L.class_ce(real_cls, labels)
            else:
                fake_logit, fake_cls = d(x_fake, y_fake, training=True)
                per_example = L.discriminator_loss(real_logit, real_cls, labels, fake_logit, fake_cls,
                                                   y_fake, cfg.loss)
            loss = tf.nn.compute_average_loss(per_example) + weight_decay_loss(d.trainable_variables,
                                                                               cfg.weight_decay)
            scaled_loss = self.d_optimizer.scale_loss(loss)
        _apply(self.d_optimizer, tape, scaled_loss, d.trainable_variables)
        self._trackers["d_loss"].update_state(tf.reduce_mean(per_example))
        self._trackers["real_class_acc"].update_state(_accuracy(real_cls, labels))
        if self.generator is not None:
            rf = tf.concat([tf.cast(real_logit > 0, tf.float32), tf.cast(fake_logit < 0, tf.float32)], 0)
            self._trackers["real_fake_acc"].update_state(tf.reduce_mean(rf))

    def g_step(self, batch_size, fakes=None):
        """One G update on a fresh batch, or with --reuse_fake on `fakes` = (images, labels, tape): the batch the
        last D update saw, whose forward pass `tape` recorded (no second generator forward pass)."""
        cfg, g = self.config, self.generator
        if fakes is None:
            z, y_fake = self.sample_inputs(batch_size)
            tape = tf.GradientTape()
            with tape:
                x_fake = g(z, y_fake, training=True)
        else:
            x_fake, y_fake, tape = fakes
        with tape:  # continues recording: D's forward pass on the fakes, after its update
            fake_logit, fake_cls = self.discriminator(x_fake, y_fake, training=True)
            per_example = L.generator_loss(fake_logit, fake_cls, y_fake, cfg.loss)
            scaled_loss = self.g_optimizer.scale_loss(tf.nn.compute_average_loss(per_example))
        _apply(self.g_optimizer, tape, scaled_loss, g.trainable_variables)
        if self.ema_weights:
            decay = cfg.ema_decay
            for ema, w in zip(self.ema_weights, g.weights):
                ema.assign(decay * ema + (1.0 - decay) * tf.cast(w, ema.dtype))
        self._trackers["g_loss"].update_state(tf.reduce_mean(per_example))
        self._trackers["fake_class_acc"].update_state(_accuracy(fake_cls, y_fake))

    def train_step(self, data):
        """One iteration: n_dis D updates on consecutive sub-batches, then one G update.

        `data` holds n_dis * batch_size examples (see `examples_per_step`). A static Python loop
        instead of a tf.cond keeps every cross-replica sync point (optimizer updates, SN vectors)
        outside control flow, which tf.distribute requires.
        """
        n = self.config.n_dis
        images, labels = tf.cast(data[0], tf.float32), tf.cast(data[1], tf.int32)
        # The name scopes label the ops in the profiler's trace viewer (--profile_steps).
        reuse = self.config.reuse_fake and self.generator is not None
        fakes = None
        for i, (x, y) in enumerate(zip(tf.split(images, n), tf.split(labels, n))):
            with tf.name_scope("attack"):
                x_adv = self.attack(x, y)
            with tf.name_scope("d_update"):
                if reuse and i == n - 1:  # the last D update's fakes also serve the G update
                    z, y_fake = self.sample_inputs(tf.shape(x)[0])
                    tape = tf.GradientTape()  # records G's forward now and D's in g_step; not D's update
                    with tape:
                        x_fake = self.generator(z, y_fake, training=True)
                    fakes = (x_fake, y_fake, tape)
                self.d_step(x_adv, y, fakes=fakes[:2] if fakes else None)
        if self.generator is not None:
            with tf.name_scope("g_update"):
                self.g_step(tf.shape(images)[0] // n, fakes=fakes)
        return {name: m.result() for name, m in self._trackers.items()}

    def examples_per_step(self, batch_size):
        """Real examples one train_step consumes: one batch per D update."""
        return batch_size * self.config.n_dis

    # -- sampling / export
    def sampling_generator(self):
        """The generator to sample and export with: G itself, or with EMA on, one persistent copy holding
        the CURRENT EMA weights (refreshed on every call, so call it after restoring a checkpoint)."""
        if not self.ema_weights:
            return self.generator
        for dst, src in zip(self._ema_generator.weights, self.ema_weights):
            dst.assign(src)
        return self._ema_generator


def make_distributed_step(model, strategy, jit_compile=False):
    """A tf.function running `model.train_step` on one batch per replica via `strategy.run`.

    Returns step(iterator) -> dict of metric results (read in cross-replica context). This is the
    training loop for any strategy, MultiWorkerMirroredStrategy included. XLA is available with a
    single replica only: a jit-compiled function inside strategy.run cannot hold the cross-replica
    sync points of a train step (Keras' fit switches XLA off under distribution for the same reason).
    """
    if jit_compile and strategy.num_replicas_in_sync > 1:
        raise ValueError("jit_compile needs a single replica; XLA cannot compile a step that "
                         "synchronises replicas. Drop --jit_compile or use one device.")
    replica_step = (tf.function(model.train_step, jit_compile=True, autograph=False) if jit_compile
                    else model.train_step)

    @tf.function(autograph=False)  # the steps use explicit TF control flow: no AST conversion to pay for
    def step(iterator):
        strategy.run(replica_step, args=(next(iterator),))
        return {m.name: m.result() for m in model.metrics}

    return step


# ----------------------------------------------------------------------------- eq. 10 fine-tuning
class FineTuner(keras.Model):
    """Fine-tunes the classifier view on CE(PGD(x_real), y) + lam * CE(PGD(G(z, y_f)), y_f).

    G is frozen; it normalises each batch of fakes by its own statistics (config.g_statistics 'batch', the
    authors': their G is never in eval mode) or samples in inference mode ('moving'), and its moving averages
    never change. The classifier is trained in training mode (the
    authors' code leaves it in inference mode after its first attack -- a defect not copied here).
    Augmentation, as in training, belongs to the input pipeline (data.train_dataset).
    With generator=None (or lam=0) it is plain Madry adversarial training of the classifier.
    """

    def __init__(self, classifier, generator=None, config: FinetuneConfig = None, **kwargs):
        super().__init__(**kwargs)
        if config is None:
            raise ValueError("FineTuner needs a FinetuneConfig.")
        d = getattr(classifier, "discriminator", None)
        if generator is not None and d is not None and generator.num_classes != d.num_classes:
            raise ValueError(f"the generator draws {generator.num_classes} classes but the classifier has "
                             f"{d.num_classes}.")
        self.config = config
        self.classifier = classifier
        self.generator = generator
        if generator is not None:  # frozen: only the classifier's variables are ever updated
            generator.build_by_calling()
        classifier.build_by_calling()
        self.rng = tf.random.Generator.from_seed(config.seed)
        self._sample = None if generator is None else sampler(generator, config.g_statistics)
        self._trackers = {n: keras.metrics.Mean(name=n) for n in ("loss", "real_adv_acc", "fake_adv_acc")}
        self.built = True

    @property
    def metrics(self):
        return list(self._trackers.values())

    def compile(self, optimizer=None, jit_compile=False, **kwargs):
        optimizer = optimizer or make_finetune_optimizer(self.config)
        super().compile(optimizer=optimizer, jit_compile=jit_compile, **kwargs)
        optimizer.build(self.classifier.trainable_variables)

    def _attack(self, images, labels):
        a = self.config.attack
        if not a.active:
            return images
        return pgd(self.classifier, images, labels, eps=a.eps, steps=a.steps,
                   step_size=self.config.attack_step_size, random_start=a.random_start,
                   restarts=a.restarts, loss=a.loss, rng=self.rng)

    def train_step(self, data):
        cfg = self.config
        images, labels = tf.cast(data[0], tf.float32), tf.cast(data[1], tf.int32)
        x_real = self._attack(images, labels)
        use_fake = self.generator is not None and cfg.lam > 0
        if use_fake:
            b = tf.shape(images)[0]
            z = self.rng.normal([b, self.generator.z_dim])
            y_fake = self.rng.uniform([b], 0, self.generator.num_classes, dtype=tf.int32)
            x_fake = self._attack(tf.stop_gradient(self._sample(z, y_fake)), y_fake)
        with tf.GradientTape() as tape:
            real_logits = self.classifier(x_real, training=True)
            per_example = L.class_ce(real_logits, labels)
            if use_fake:
                fake_logits = self.classifier(x_fake, training=True)
                per_example += cfg.lam * L.class_ce(fake_logits, y_fake)
            scaled_loss = self.optimizer.scale_loss(tf.nn.compute_average_loss(per_example))
        _apply(self.optimizer, tape, scaled_loss, self.classifier.trainable_variables)
        self._trackers["loss"].update_state(tf.reduce_mean(per_example))
        self._trackers["real_adv_acc"].update_state(_accuracy(real_logits, labels))
        if use_fake:
            self._trackers["fake_adv_acc"].update_state(_accuracy(fake_logits, y_fake))
        return {name: m.result() for name, m in self._trackers.items()}


def finetune_boundaries(steps):
    """The fine-tuning stage boundaries: 1/3, 2/3 and 5/6 of the run (the authors' 20+20+10+10 epochs)."""
    return tuple(sorted({max(steps // 3, 1), max(2 * steps // 3, 2), max(5 * steps // 6, 3)}))


def make_finetune_optimizer(config: FinetuneConfig):
    """Adam(lr) divided by 10 at each stage boundary, restarted there too when config.reset_adam (the
    authors re-create Adam for every stage)."""
    boundaries = finetune_boundaries(config.steps)
    lr = make_schedule("step", config.lr, config.steps, boundaries=boundaries, factor=0.1)
    return make_optimizer("adam", lr, epsilon=config.adam_epsilon, loss_scale=loss_scaled(config.precision),
                          restart_at=boundaries if config.reset_adam else (), name="finetune_adam")
