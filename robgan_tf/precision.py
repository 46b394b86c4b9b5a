"""Which floating-point precision a run computes in, and which hardware computes bfloat16 natively.

    float32          everything in float32
    mixed_bfloat16   layers compute in bfloat16, variables stay float32; no loss scaling (bfloat16 has float32's
                     exponent range)
    mixed_float16    layers compute in float16, variables float32; both optimizers loss-scaled
    auto             mixed_bfloat16 where the hardware computes it natively (a CPU with AVX-512-BF16 or AMX, a GPU
                     of compute capability >= 8.0, a TPU), else float32

Whatever the policy, the numerics that need float32 keep it (docs/PERFORMANCE.md, "Precision"): spectral norm's
power iteration and sigma, batch-norm statistics and conditional-BN parameters, logits and losses, the attack's
perturbation and projection, optimizer states, the EMA generator; and exports are float32 (`float32_copy`).
"""
from __future__ import annotations

PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16", "auto")
POLICIES = PRECISIONS[:3]


def cpuinfo():
    """(model name or None, set of flags) of this machine's CPU from /proc/cpuinfo; (None, set()) elsewhere."""
    model, flags = None, set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and model is None:
                    model = value.strip()
                elif key.strip() == "flags" and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    return model, flags


def native_bfloat16(cpu_flags=None, gpu_capabilities=None, tpus=None):
    """The reason this machine computes bfloat16 natively, or None. The arguments default to what this process
    sees (CPU flags from /proc/cpuinfo, TensorFlow's GPUs and TPUs); tests pass their own."""
    import tensorflow as tf

    if tpus is None:
        tpus = len(tf.config.list_logical_devices("TPU"))
    if tpus:
        return "a TPU"
    if gpu_capabilities is None:
        gpu_capabilities = [tf.config.experimental.get_device_details(g).get("compute_capability", (0, 0))
                            for g in tf.config.list_physical_devices("GPU")]
    if gpu_capabilities:  # a GPU run computes on the GPUs: their capability decides
        if all(tuple(c) >= (8, 0) for c in gpu_capabilities):
            return f"GPUs of compute capability {min(tuple(c) for c in gpu_capabilities)} (>= 8.0)"
        return None
    flags = cpuinfo()[1] if cpu_flags is None else set(cpu_flags)
    native = sorted(flags & {"avx512_bf16", "amx_bf16"})
    return f"a CPU with {' and '.join(f.upper() for f in native)}" if native else None


def resolve(precision, **hardware):
    """(Keras dtype policy name, the reason it was chosen) for a --precision value."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}.")
    if precision != "auto":
        return precision, "asked for"
    reason = native_bfloat16(**hardware)
    if reason:
        return "mixed_bfloat16", f"auto: {reason} computes bfloat16 natively"
    return "float32", "auto: no native bfloat16 here (no AVX-512-BF16 / AMX CPU, GPU >= 8.0 or TPU)"


def loss_scaled(policy):
    """Only float16 needs loss scaling: its exponent range is too narrow for small gradients."""
    return policy == "mixed_float16"


def float32_copy(model):
    """`model` itself when it computes in float32, else the same network rebuilt under the float32 policy holding
    the same (float32) weights: what exports, evaluations and quality scores run, so they measure the model
    that is served. Works for this package's Generator, Discriminator and Classifier."""
    from robgan_tf.models import Classifier

    if model.dtype_policy.name == "float32" and not isinstance(model, Classifier):
        return model
    if isinstance(model, Classifier):
        if model.dtype_policy.name == "float32" and model.discriminator.dtype_policy.name == "float32":
            return model
        d = float32_copy(model.discriminator)
        with _float32_policy():  # the view too: a mixed-policy layer casts its inputs to the low precision
            return d.classifier()
    with _float32_policy():
        config = model.get_config()
        config.pop("dtype", None)
        copy = type(model).from_config(config)
        copy.build_by_calling()
    copy.set_weights(model.get_weights())
    return copy


class _float32_policy:
    def __enter__(self):
        import keras

        self.previous = keras.config.dtype_policy()
        keras.config.set_dtype_policy("float32")

    def __exit__(self, *exc):
        import keras

        keras.config.set_dtype_policy(self.previous)
