"""GPU benchmark, one prepared script for a lent H100/H200-class machine (CI never has one); under 10 minutes.

    python bench/gpu.py [--steps 20] [--peak-tflops 989] [--eval-model DIR] [--skip-eval] [--json OUT]
    python bench/gpu.py --cpu --tiny           # smoke test on CPU: tiny BERT, a few steps, 200 STS-B pairs

(a) Training step. A random-weight bert-base-sized BERT (12 layers, hidden 768, 12 heads, intermediate 3072,
    vocab 30522: ``matryoshka2d.testing.make_tiny_bert`` with those sizes, the bundled WordPiece vocab) is saved
    to a temp dir and loaded twice: as our ``Encoder`` and as a ``SentenceTransformer``. Batches are synthetic
    (anchor, positive) pairs, 128 x 128 tokens per column (texts of random whole-word vocab entries, truncated to
    exactly 128 tokens: no padding). Every step runs forward + loss + backward + clip + AdamW for EVERY method in
    turn on the same batch (round robin): our ``full`` (plain MNRL), ``v1-st6``, ``v2``, ``v2-fulldim`` through
    the training loop's own ``batch_loss`` (bf16 autocast, ``build_optimizer``), and sentence-transformers'
    ``Matryoshka2dLoss(MNRL)`` (the v1-st6 dims, 1 layer / 1 dim per step, KL 0.3) and plain ``MNRL`` under bf16
    autocast with the same optimizer settings. Median step time after the warm-up steps, and ratios.
    Goals: v1-st6 <= 1.00x ST Matryoshka2dLoss, full <= 1.00x ST MNRL.
(b) Model FLOPs utilisation of our step: MFU = tokens * (6 N + 12 L H T) / step time / peak bf16 FLOP/s, with N the
    non-embedding parameters (the transformer blocks), tokens = every (padded) token forwarded in the step, T the
    sequence length; peak: H100 SXM / H200 989e12 dense bf16 (H100 PCIe 756e12, H100 NVL 835e12, A100 312e12),
    chosen from ``torch.cuda.get_device_name``, ``--peak-tflops`` overrides. Goal: MFU >= 40% (our full and
    v1-st6 steps). Tokenisation runs inside the step (ours in ``batch_loss``, theirs in ``preprocess``); its time
    alone is reported too.
(c) Peak memory: ``torch.cuda.max_memory_allocated`` of a v2, v2-fulldim (and v1-st6) step vs a plain step, measured
    before the sentence-transformers model is put on the GPU, so the resident part is our model + AdamW state only;
    the step's growth over its resident memory is reported too. Goal: v2 and v2-fulldim <= 1.15x plain.
(d) Evaluation: our whole grid (every layer x dims 8..H, ``evaluate_grid``) vs sentence-transformers'
    ``EmbeddingSimilarityEvaluator`` scoring one cell (last layer, full dim), STS-B test, on the GPU: the code of
    ``bench/eval_vs_st.py``. Goal: ours / theirs <= 1.0 wall, equal Spearman (1e-4).

On the lent machine (Python 3.12, torch, transformers, sentence-transformers 6.0.1 but no pydantic, pytrec_eval nor
the bundled MiniLM, whose 91 MB of weights exceed what a call carries), prepare here once, in the repo root::

    echo /.gpu/ >> .git/info/exclude
    python bench/gpu.py --pack-eval-model .gpu/minilm-fp16        # MiniLM as fp16 (44 MB); upcast to fp32 there
    mkdir -p .gpu/data && cp -r $M2D_DATA_DIR/stsb .gpu/data/
    for p in pydantic==2.14.4 pydantic-core==2.50.5 annotated-types typing-inspection typing-extensions \\
             pytrec-eval-terrier==0.5.11 sentence-transformers==6.2.0; do
      python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \\
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \\
        -d .gpu/whl $p; done                                     # 3.8 MB; .gpu/ is about 50 MB in all

and run it with ``carry: [".gpu"]``::

    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .gpu/whl/*.whl &&
    PYTHONUNBUFFERED=1 PYTHONPATH=/tmp/site:platform HF_HUB_OFFLINE=1 M2D_DATA_DIR=.gpu/data \\
    python3 bench/gpu.py --eval-model .gpu/minilm-fp16 --vocab .gpu/minilm-fp16/vocab.txt --json $OUT/gpu.json

About 1-2 minutes on an H200 once started (bert-base step ~0.1 s x 6 methods x ~30 steps, STS-B eval x 3).
The fp16 round trip changes MiniLM's weights by up to ~1e-3 relative, so (d)'s metric values can differ slightly
from the CPU figures; ours and theirs still read the same (upcast) weights.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import platform
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/eval_vs_st.py, for (d)

from matryoshka2d import testing  # noqa: E402
from matryoshka2d.config import load_config  # noqa: E402
from matryoshka2d.encoder import load_encoder  # noqa: E402
from matryoshka2d.losses import Matryoshka2DLoss  # noqa: E402
from matryoshka2d.train import TrainData, batch_loss, build_optimizer  # noqa: E402

OURS = ["full", "v1-st6", "v2", "v2-fulldim"]
ST_M2D, ST_MNRL = "ST Matryoshka2dLoss", "ST MNRL"
BERT_BASE = {"num_layers": 12, "hidden_size": 768, "num_heads": 12, "intermediate_size": 3072}
TINY = {"num_layers": 4, "hidden_size": 64, "num_heads": 4, "intermediate_size": 128}
PEAK_BF16 = [("H100 PCIe", 756e12), ("H100 NVL", 835e12), ("H100", 989e12), ("H200", 989e12), ("H800", 989e12),
             ("A100", 312e12), ("A800", 312e12), ("L40S", 362e12)]  # dense bf16 tensor-core FLOP/s, by name


def peak_flops(device: torch.device, override_tflops: float | None) -> tuple[float | None, str]:
    if override_tflops:
        return override_tflops * 1e12, "--peak-tflops"
    if device.type != "cuda":
        return None, "none known for CPU"
    name = torch.cuda.get_device_name(device)
    for key, value in PEAK_BF16:
        if key.lower() in name.lower():
            return value, f"{name} ({key})"
    return None, f"{name}: unknown, give --peak-tflops"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def vocab_words(vocab: Path) -> list[str]:
    """Whole-word, lower-case ASCII vocab entries: each is exactly one WordPiece token."""
    return [w for w in vocab.read_text().splitlines() if w.isascii() and w.isalpha() and w.islower()]


def synthetic_pairs(words: list[str], n: int, seq_len: int, seed: int = 0) -> TrainData:
    """``n`` (anchor, positive) pairs of ``seq_len`` random words each: ``seq_len`` tokens after truncation."""
    rng = random.Random(seed)
    column = lambda: [" ".join(rng.choices(words, k=seq_len)) for _ in range(n)]  # noqa: E731
    return TrainData([column(), column()])


def build_model(path: Path, shape: dict, vocab: Path | None) -> Path:
    """``make_tiny_bert`` at ``shape``; with ``vocab`` (no bundled MiniLM package there) that vocab file instead."""
    if vocab is not None:
        testing.bundled_vocab = lambda: vocab  # make_tiny_bert reads the vocab through this function
    return testing.make_tiny_bert(path, seed=0, **shape)


# -- (a) + (b) + (c) ------------------------------------------------------------------------------------------------
def bench_train(args, device: torch.device, model_dir: Path, words: list[str]) -> dict:
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.losses import Matryoshka2dLoss, MultipleNegativesRankingLoss

    B, T = args.batch_size, args.seq_len
    n_steps = args.warmup + args.steps
    data = synthetic_pairs(words, B * n_steps, T)
    batches = [list(range(s * B, (s + 1) * B)) for s in range(n_steps)]
    base = {"model": {"max_length": T}, "train": {"batch_size": B}}
    cfgs = {name: load_config(name, base) for name in OURS}

    torch.manual_seed(0)
    encoder = load_encoder(str(model_dir), max_length=T, device=device)
    encoder.train()
    L, H = encoder.num_layers, encoder.hidden_size
    losses = {name: Matryoshka2DLoss(c.method.resolve(L, H), seed=0) for name, c in cfgs.items()}
    opt, _ = build_optimizer(encoder.model, cfgs["full"])
    chunks = args.chunks or (1 if device.type == "cuda" else cfgs["full"].train.column_chunks)
    n_params = sum(p.numel() for p in encoder.model.parameters())
    n_blocks = sum(p.numel() for p in encoder.model.encoder.parameters())  # non-embedding: the transformer blocks
    tokens: dict[str, int] = {}

    def our_step(name: str, idx: list[int]) -> None:
        loss, _, real, padded = batch_loss(encoder, losses[name], data, idx, chunks, args.bf16)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(encoder.model.parameters(), cfgs["full"].train.max_grad_norm)
        opt.step()
        opt.zero_grad(set_to_none=True)
        tokens[name], tokens["real"] = padded, real

    cuda = device.type == "cuda"

    def measured(step, *a) -> tuple[float, int | None, int | None]:
        """(seconds, peak bytes, peak bytes above the memory resident at the start) of one step."""
        sync(device)
        if cuda:
            torch.cuda.reset_peak_memory_stats(device)
            resident = torch.cuda.memory_allocated(device)
        t0 = time.perf_counter()
        step(*a)
        sync(device)
        dt = time.perf_counter() - t0
        if not cuda:
            return dt, None, None
        peak = torch.cuda.max_memory_allocated(device)
        return dt, peak, peak - resident

    # warm-up (kernels, AdamW state), then (c): ours alone on the device
    for name in OURS:
        our_step(name, batches[0])
    memory: dict[str, dict] = {}
    for name in OURS:
        runs = [measured(our_step, name, batches[i % n_steps]) for i in range(args.memory_steps)]
        memory[name] = {"peak_bytes": max(r[1] or 0 for r in runs) if cuda else None,
                        "step_growth_bytes": max(r[2] or 0 for r in runs) if cuda else None}

    # their model, same folder, same device; same optimizer settings
    st = SentenceTransformer(str(model_dir), device=str(device))
    st.max_seq_length = T
    st.train()
    st_mnrl = MultipleNegativesRankingLoss(st)
    v1 = losses["v1-st6"].method
    m2d_kwargs = dict(matryoshka_dims=sorted(v1.last_dims, reverse=True), n_layers_per_step=1, n_dims_per_step=1,
                      kl_div_weight=1.0, kl_temperature=0.3)
    if "layer_weighting" in inspect.signature(Matryoshka2dLoss.__init__).parameters:
        m2d_kwargs["layer_weighting"] = "uniform"
    st_losses = {ST_M2D: Matryoshka2dLoss(st, st_mnrl, **m2d_kwargs), ST_MNRL: st_mnrl}
    st_opt, _ = build_optimizer(st, cfgs["full"])
    autocast = lambda: torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16)  # noqa: E731

    def st_step(name: str, idx: list[int]) -> None:
        texts = [[col[i] for i in idx] for col in data.columns]
        features = [st.preprocess(t) if hasattr(st, "preprocess") else st.tokenize(t) for t in texts]
        features = [{k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in f.items()} for f in features]
        with autocast():
            loss = st_losses[name](features, None)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(st.parameters(), cfgs["full"].train.max_grad_norm)
        st_opt.step()
        st_opt.zero_grad(set_to_none=True)
        tokens[name] = sum(int(f["attention_mask"].numel()) for f in features)

    for name in st_losses:
        st_step(name, batches[0])

    methods = [(name, our_step) for name in OURS] + [(name, st_step) for name in st_losses]
    times: dict[str, list[float]] = {name: [] for name, _ in methods}
    growth: dict[str, list[int]] = {name: [] for name, _ in methods}
    tokenize: list[float] = []
    for s, idx in enumerate(batches):
        for name, step in methods:
            dt, _, grew = measured(step, name, idx)
            times[name].append(dt)
            growth[name].append(grew or 0)
        t0 = time.perf_counter()  # tokenising one step's columns alone (it is inside every step above)
        for col in data.columns:
            encoder._pad(encoder.token_ids([col[i] for i in idx]), range(len(idx)))
        tokenize.append(time.perf_counter() - t0)
        print(f"step {s + 1}/{n_steps}", file=sys.stderr, flush=True)

    keep = slice(args.warmup, None)
    median = {name: statistics.median(t[keep] or t) for name, t in times.items()}
    tok_s = statistics.median(tokenize[keep] or tokenize)
    peak, peak_source = peak_flops(device, args.peak_tflops)
    per_token = 6 * n_blocks + 12 * L * H * T
    mfu = {name: (tokens[name] * per_token / median[name] / peak if peak else None) for name in median}
    mfu_no_tok = {name: (tokens[name] * per_token / max(1e-9, median[name] - tok_s) / peak if peak else None)
                  for name in median}
    plain = memory["full"]
    return {
        "shape": {"layers": L, "hidden": H, "batch_size": B, "seq_len": T, "columns": len(data.columns),
                  "params": n_params, "non_embedding_params": n_blocks, "column_chunks": chunks,
                  "bf16": args.bf16, "warmup": args.warmup, "steps": args.steps},
        "tokens_per_step": tokens, "padded_over_real": tokens["full"] / max(1, tokens["real"]),
        "median_step_s": median, "all_step_s": times, "tokenize_s": tok_s,
        "ratio_to_ours_full": {k: v / median["full"] for k, v in median.items()},
        "ours_vs_st": {"v1-st6 / ST Matryoshka2dLoss": median["v1-st6"] / median[ST_M2D],
                       "full / ST MNRL": median["full"] / median[ST_MNRL]},
        "flops_per_token": per_token, "peak_flops": peak, "peak_source": peak_source,
        "mfu": mfu, "mfu_without_tokenize": mfu_no_tok,
        "memory": memory,
        "memory_ratio": ({k: v["peak_bytes"] / plain["peak_bytes"] for k, v in memory.items()} if cuda else None),
        "step_growth_median_bytes": ({k: statistics.median(v[keep] or v) for k, v in growth.items()} if cuda else None),
    }


# -- (d) ------------------------------------------------------------------------------------------------------------
def pack_eval_model(name: str, out: Path) -> Path:
    """``name`` (default the bundled MiniLM) as a SentenceTransformer folder with fp16 weights (small enough to
    carry to the GPU machine)."""
    from transformers import AutoModel

    from matryoshka2d.encoder import resolve_model_path

    src = Path(resolve_model_path(name))
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(src, out, ignore=shutil.ignore_patterns("*.safetensors", "*.bin", "README.md", "data_config.json"))
    AutoModel.from_pretrained(src, dtype=torch.float32).half().save_pretrained(out)
    return out


def fp32_copy(path: str, tmp: Path) -> str:
    """A model folder whose weights are not float32 (a packed copy) is upcast into ``tmp``; others as they are."""
    from safetensors import safe_open
    from transformers import AutoModel

    weights = Path(path) / "model.safetensors"
    if not weights.is_file():
        return path
    with safe_open(str(weights), "pt") as fh:
        dtype = fh.get_slice(next(iter(fh.keys()))).get_dtype()
    if dtype == "F32":
        return path
    dst = tmp / "eval-model-fp32"
    shutil.copytree(path, dst)
    AutoModel.from_pretrained(path, dtype=torch.float32).save_pretrained(dst)
    return str(dst)


def bench_eval(args, device: torch.device, tmp: Path) -> dict:
    import eval_vs_st

    from matryoshka2d import data
    from matryoshka2d.cells import parse_dims, parse_layers
    from matryoshka2d.encoder import resolve_model_path

    path = fp32_copy(resolve_model_path(args.eval_model), tmp)
    encoder = load_encoder(path, device=device)
    st = eval_vs_st.st_model(encoder, path)
    ds = eval_vs_st.cap_sts(data.load("stsb", "test", args.data_dir), args.eval_max_pairs)
    layers = parse_layers("all", encoder.num_layers)
    dims = parse_dims("all", encoder.hidden_size)
    warm = ["warm up the kernels"] * 8
    encoder.encode_layers(warm, [encoder.num_layers])
    st.encode(warm)
    r = eval_vs_st.bench_dataset(encoder, st, ds, layers, dims, args.eval_batch_size, args.eval_repeat)
    r["model"] = args.eval_model
    print(eval_vs_st.report(r), flush=True)
    return r


# -- report ---------------------------------------------------------------------------------------------------------
def table(r: dict) -> str:
    med, mib = r["median_step_s"], 2 ** -20
    ref = {name: (ST_MNRL if name == "full" else ST_M2D) for name in OURS}
    lines = [f"\n== (a)+(b) training step: {r['shape']}", f"tokens per step {r['tokens_per_step']['full']} "
             f"(padded/real {r['padded_over_real']:.3f}); tokenising a step's columns alone "
             f"{r['tokenize_s'] * 1e3:.1f} ms",
             f"peak {r['peak_flops'] / 1e12:.0f} TFLOP/s ({r['peak_source']})" if r["peak_flops"]
             else f"peak: {r['peak_source']} (MFU not computed)",
             f"{'method':<22}{'median ms':>11}{'x ours full':>13}{'x ST':>8}{'MFU':>8}{'MFU-tok':>9}{'growth MiB':>12}"]
    for name, m in med.items():
        vs = f"{m / med[ref[name]]:8.2f}" if name in ref else f"{'':8}"
        mfu = (f"{r['mfu'][name]:8.1%}{r['mfu_without_tokenize'][name]:9.1%}" if r["peak_flops"]
               else f"{'n/a':>8}{'n/a':>9}")
        grew = f"{r['step_growth_median_bytes'][name] * mib:12.0f}" if r["step_growth_median_bytes"] else f"{'n/a':>12}"
        label = "ours full (plain MNRL)" if name == "full" else (f"ours {name}" if name in OURS else name)
        lines.append(f"{label:<22}{m * 1e3:11.1f}{m / med['full']:13.2f}{vs}{mfu}{grew}")
    lines.append("  x ST: ours full vs ST MNRL, our 2D presets vs ST Matryoshka2dLoss; growth: step peak over resident")
    lines.append("\n== (c) peak memory, ours alone on the device (max_memory_allocated)")
    if r["memory_ratio"]:
        for name, m in r["memory"].items():
            lines.append(f"  {name:<12}{m['peak_bytes'] * mib:9.0f} MiB peak  x{r['memory_ratio'][name]:.3f} plain"
                         f"   step growth {m['step_growth_bytes'] * mib:7.0f} MiB")
    else:
        lines.append("  n/a on CPU (bench/step_memory.py measures RSS there)")
    return "\n".join(lines)


def goals(train: dict, ev: dict | None) -> dict[str, bool | None]:
    med, out = train["median_step_s"], {}
    out["(a) v1-st6 <= 1.00x ST Matryoshka2dLoss"] = med["v1-st6"] <= med[ST_M2D]
    out["(a) full <= 1.00x ST MNRL"] = med["full"] <= med[ST_MNRL]
    for name in ("full", "v1-st6"):
        out[f"(b) MFU >= 40% (ours {name})"] = train["mfu"][name] >= 0.40 if train["peak_flops"] else None
    for name in ("v2", "v2-fulldim"):
        out[f"(c) {name} peak memory <= 1.15x plain"] = (train["memory_ratio"][name] <= 1.15
                                                         if train["memory_ratio"] else None)
    if ev is not None:
        out["(d) grid (all cells) / ST one cell <= 1.0 wall"] = ev["ratio"]["wall_s"] <= 1.0
        out["(d) full-cell Spearman equal (1e-4)"] = all(m["equal"] for m in ev["metrics"])
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cpu", action="store_true", help="run on CPU (smoke test; no MFU / memory figures)")
    ap.add_argument("--tiny", action="store_true", help="tiny BERT, batch 8 x 32 tokens, 3 steps, 200 STS-B pairs")
    ap.add_argument("--steps", type=int, default=None, help="timed steps after the warm-up (default 20; tiny 2)")
    ap.add_argument("--warmup", type=int, default=None, help="untimed round-robin steps first (default 3; tiny 1)")
    ap.add_argument("--memory-steps", type=int, default=2, help="steps per method for (c)")
    ap.add_argument("--batch-size", type=int, default=None, help="default 128 (tiny 8)")
    ap.add_argument("--seq-len", type=int, default=None, help="default 128 (tiny 32)")
    ap.add_argument("--chunks", type=int, default=None,
                    help="our column_chunks (default 1 on GPU, the config's on CPU)")
    ap.add_argument("--no-bf16", dest="bf16", action="store_false", help="no bf16 autocast")
    ap.add_argument("--peak-tflops", type=float, default=None, help="peak dense bf16 TFLOP/s (default: by GPU name)")
    ap.add_argument("--vocab", type=Path, default=None, help="WordPiece vocab.txt (default: the bundled MiniLM's)")
    ap.add_argument("--skip-eval", action="store_true", help="skip (d)")
    ap.add_argument("--eval-model", default="minilm-l6", help="(d)'s model: alias, folder, or a --pack-eval-model copy")
    ap.add_argument("--eval-repeat", type=int, default=3)
    ap.add_argument("--eval-batch-size", type=int, default=64)
    ap.add_argument("--eval-max-pairs", type=int, default=None, help="cap STS-B test pairs (tiny: 200)")
    ap.add_argument("--data-dir", default=os.environ.get("M2D_DATA_DIR"))
    ap.add_argument("--pack-eval-model", type=Path, default=None, metavar="DIR",
                    help="write --eval-model as an fp16 folder to DIR (to carry to the GPU machine) and exit")
    ap.add_argument("--json", default=None, help="write the figures here")
    args = ap.parse_args(argv)
    if args.pack_eval_model:
        out = pack_eval_model(args.eval_model, args.pack_eval_model)
        print(f"wrote {out} ({sum(p.stat().st_size for p in out.rglob('*') if p.is_file()) / 2**20:.1f} MiB)")
        return 0
    tiny = args.tiny
    for key, full, small in [("steps", 20, 2), ("warmup", 3, 1), ("batch_size", 128, 8), ("seq_len", 128, 32),
                             ("eval_max_pairs", None, 200)]:
        if getattr(args, key) is None:
            setattr(args, key, small if tiny else full)
    if not args.cpu and not torch.cuda.is_available():
        ap.error("no CUDA device; give --cpu (with --tiny for a smoke test)")
    device = torch.device("cpu" if args.cpu else "cuda")
    vocab = args.vocab
    if vocab is None:
        try:
            vocab = testing.bundled_vocab()
        except ImportError:
            ap.error("the bundled MiniLM package is not installed here; give --vocab (e.g. a packed model's vocab.txt)")
    else:
        vocab = vocab.resolve()

    import sentence_transformers
    import transformers

    env = {"device": torch.cuda.get_device_name() if device.type == "cuda" else platform.processor() or "cpu",
           "torch": torch.__version__, "cuda": torch.version.cuda, "transformers": transformers.__version__,
           "sentence_transformers": sentence_transformers.__version__, "python": platform.python_version(),
           "torch_threads": torch.get_num_threads(), "cpus": os.cpu_count(), "tiny": tiny}
    print(f"# {env}", flush=True)
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model_dir = build_model(tmp / "bert", TINY if tiny else BERT_BASE, vocab if args.vocab else None)
        train = bench_train(args, device, model_dir, vocab_words(vocab))
        print(table(train), flush=True)
        if device.type == "cuda":
            torch.cuda.empty_cache()
        ev = None
        if not args.skip_eval:
            print("\n== (d) evaluation: our grid (all cells) vs ST EmbeddingSimilarityEvaluator (one cell), STS-B test")
            ev = bench_eval(args, device, tmp)
    met = goals(train, ev)
    print("\n== goals")
    for goal, ok in met.items():
        print(f"goal {goal}: {'met' if ok else 'n/a' if ok is None else 'NOT met'}")
    wall = time.perf_counter() - t_start
    print(f"# total {wall:.0f} s")
    result = {"env": env, "train": train, "eval": ev, "goals": met, "wall_s": wall}
    print(json.dumps({"env": env, "median_step_s": train["median_step_s"], "ours_vs_st": train["ours_vs_st"],
                      "mfu": train["mfu"], "memory_ratio": train["memory_ratio"],
                      "eval_ratio": ev["ratio"] if ev else None,
                      "eval_metrics": ev["metrics"] if ev else None, "goals": met}, indent=1))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=2)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
