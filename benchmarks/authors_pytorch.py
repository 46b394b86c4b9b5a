"""Side by side on this machine: the Rob-GAN authors' own PyTorch training iteration against robgan-benchmark's.

    pip install torch                      # any recent CPU build; nothing of theirs is installed
    git clone https://github.com/xuanqing94/RobGAN AUTHORS   # (tested at 8a478cf)
    python benchmarks/authors_pytorch.py --authors_code=AUTHORS [--iterations=10] [--precision=auto]

Their side runs their `train.py` itself (`train()`, --model resnet_32: their 32 px generator and BN
discriminator, batch 64, --iter_d 1, --adv_steps 5, --epsilon 0.07: their CIFAR setting) and times each batch of
its loop. Our side runs `robgan-benchmark --arch=reference --n_dis=1 --batch_size=64 --attack_steps=5
--attack_eps=0.07` (the same networks, step and attack). Both run in subprocesses of this script, one after the
other, on random CIFAR-shaped data; the script prints both medians, their ratio, the processor and both
frameworks' versions, and writes them to --json_out.

Adaptations, all outside their sources (nothing of theirs is changed or copied):
- no GPU: `.cuda()` returns the tensor or module itself and `DataParallel` is the module itself (their train.py
  refuses --ngpu 0, so it is given --ngpu 1);
- no torchvision: stand-in `torchvision.datasets.CIFAR10` (random uint8 images and labels, as many as the timed
  batches need), `transforms` (ToTensor and Normalize to [-1, 1]; no crop, flip or noise: data cost is not what is
  compared) and `utils.save_image` (does nothing);
- current torch refuses their Adam betas (0, 0.9), an int beside a float: they are passed as floats;
- the loop stops after --warmup + --iterations batches (their epoch would be 781).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

THEIR_ARGS = ["--model", "resnet_32", "--nz", "128", "--ngf", "64", "--ndf", "64", "--nclass", "10",
              "--batch_size", "64", "--start_width", "4", "--dataset", "cifar10", "--root", "unused",
              "--img_width", "32", "--iter_d", "1", "--out_f", "OUT", "--ngpu", "1", "--max_epoch", "1",
              "--lr", "0.0002", "--adv_steps", "5", "--epsilon", "0.07", "--workers", "0"]


def _their_side(code, batches, out_json):
    """Runs in a subprocess: their train() with the stand-ins, timing each batch of its loop."""
    import types

    import numpy as np
    import torch

    times = []

    class Timed(torch.utils.data.Dataset):
        def __init__(self, *args, transform=None, **kwargs):
            rng = np.random.default_rng(0)
            n = 64 * (batches + 1)  # one more: a batch's time is the gap to the next batch
            self.images = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
            self.labels = rng.integers(0, 10, n)

        def __len__(self):
            return len(self.labels)

        def __getitem__(self, i):
            x = torch.from_numpy(self.images[i]).float() / 127.5 - 1.0
            return x, int(self.labels[i])

    stamps = [time.perf_counter()]

    class Loader(torch.utils.data.DataLoader):
        def __iter__(self):
            for batch in super().__iter__():
                now = time.perf_counter()
                times.append(now - stamps[-1])  # the previous batch's iteration, loading included
                stamps.append(now)
                yield batch

    tv = types.ModuleType("torchvision")
    tv.datasets = types.SimpleNamespace(CIFAR10=Timed, ImageFolder=Timed)
    tv.transforms = types.SimpleNamespace(Compose=lambda fs: None, RandomCrop=lambda *a, **k: None,
                                          RandomHorizontalFlip=lambda *a, **k: None, ToTensor=lambda: None,
                                          Normalize=lambda *a, **k: None, Lambda=lambda f: None,
                                          RandomResizedCrop=lambda *a, **k: None)
    tv.utils = types.SimpleNamespace(save_image=lambda *a, **k: None)
    sys.modules.update({"torchvision": tv, "torchvision.datasets": tv.datasets,
                        "torchvision.transforms": tv.transforms, "torchvision.utils": tv.utils})
    torch.Tensor.cuda = lambda self, *a, **k: self
    torch.nn.Module.cuda = lambda self, *a, **k: self
    torch.nn.DataParallel = lambda module, device_ids=None: module
    torch.utils.data.DataLoader = Loader
    adam = torch.optim.Adam

    class FloatBetasAdam(adam):
        def __init__(self, params, betas=(0.9, 0.999), **kwargs):
            super().__init__(params, betas=tuple(float(b) for b in betas), **kwargs)

    torch.optim.Adam = FloatBetasAdam
    out = tempfile.mkdtemp()
    sys.argv = ["train.py", *[out if a == "OUT" else a for a in THEIR_ARGS]]
    sys.path.insert(0, code)
    os.chdir(out)
    import builtins
    real_print = builtins.print
    builtins.print = lambda *a, **k: None  # their per-batch log lines
    try:
        import train as their_train
        their_train.opt.out_f = "."
        their_train.train()
    finally:
        builtins.print = real_print
    with open(out_json, "w") as f:
        json.dump({"times": times[1:], "torch": torch.__version__, "threads": torch.get_num_threads()}, f)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--authors_code", required=True, help="a checkout of xuanqing94/RobGAN")
    parser.add_argument("--iterations", type=int, default=10, help="timed iterations on each side")
    parser.add_argument("--warmup", type=int, default=2, help="untimed iterations first, on each side")
    parser.add_argument("--precision", default="float32", help="ours: --precision for robgan-benchmark")
    parser.add_argument("--json_out", default="")
    parser.add_argument("--_their_side", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._their_side:
        return _their_side(os.path.abspath(args.authors_code), args.warmup + args.iterations, args._their_side)
    with tempfile.TemporaryDirectory() as tmp:
        theirs_json, ours_json = os.path.join(tmp, "theirs.json"), os.path.join(tmp, "ours.json")
        subprocess.run([sys.executable, os.path.abspath(__file__), f"--authors_code={args.authors_code}",
                        f"--iterations={args.iterations}", f"--warmup={args.warmup}",
                        f"--_their_side={theirs_json}"], check=True)
        subprocess.run([sys.executable, "-m", "robgan_tf.cli.benchmark", "--arch=reference", "--n_dis=1",
                        "--batch_size=64", "--attack_steps=5", "--attack_eps=0.07", f"--precision={args.precision}",
                        f"--iterations={args.iterations}", f"--warmup={args.warmup}", "--component_iterations=0",
                        f"--json_out={ours_json}"], check=True, stdout=subprocess.DEVNULL)
        theirs, ours = json.load(open(theirs_json)), json.load(open(ours_json))
    their_times = theirs["times"][args.warmup:args.warmup + args.iterations]
    report = {
        "authors_pytorch_median_s": statistics.median(their_times), "authors_pytorch_times_s": their_times,
        "robgan_tf_median_s": ours["median_s_per_iter"], "robgan_tf_policy": ours.get("policy"),
        "ratio_ours_over_theirs": ours["median_s_per_iter"] / statistics.median(their_times),
        "processor": ours["processor"], "torch": theirs["torch"], "torch_threads": theirs["threads"],
        "tensorflow": ours["tensorflow"], "iterations": args.iterations, "warmup": args.warmup,
    }
    print(f"processor: {report['processor'].get('model')}; torch {report['torch']} ({report['torch_threads']} "
          f"threads), TensorFlow {report['tensorflow']}")
    print(f"authors' train.py iteration: median {report['authors_pytorch_median_s']:.3f} s; robgan_tf "
          f"({report['robgan_tf_policy']}): {report['robgan_tf_median_s']:.3f} s; ratio "
          f"{report['ratio_ours_over_theirs']:.2f}x")
    # the target: at most half the authors' time where bfloat16 is native (run with --precision=auto there)
    native = report["robgan_tf_policy"] == "mixed_bfloat16"
    report["target"] = {"ratio_at_most": 0.5 if native else None,
                        "met": report["ratio_ours_over_theirs"] <= 0.5 if native else None}
    print("target <= 0.5x with native bfloat16: " + (("met" if report["target"]["met"] else "NOT met") if native
                                                      else "not applicable (robgan_tf ran in float32)"))
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
