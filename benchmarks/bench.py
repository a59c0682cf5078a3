"""Speed benchmark: our encoder/decoder against HF transformers at the same sizes, on this machine.

Training steps (forward + backward + AdamW) in tokens/s, FLOPs counted by torch's FlopCounterMode (what each model
really executes) and MFU against this machine's measured matmul peak; decode tokens/s and cache bytes/token
for naive vs absorbed MLA vs HF generate. Runs are interleaved (round-robin over models) and medians reported; each model is also run alone in a fresh
process ("isolated", 5 steps after 2 warm-ups, which also gives its peak memory: growth of the process's peak RSS on
CPU, allocated memory on CUDA), because
in one process the models' allocations interact (large logits freed and re-faulted each step).
Targets are printed, met or not; nothing here asserts a timing.

Suites (`--only`, default all): encoder, decoder (training steps vs HF), decode (batch 1, two contexts),
scale (MHA / GQA / MLA / MLA-o training tokens/s at the seed's 13M, a ~50M and the 124M shape, measured vs
FLOP-predicted speed-up), decode_sweep (contexts x batches: naive vs absorbed vs HF, cache bytes, peak memory,
crossover), finetune (SST-2 steps on real sentences, dynamic padding, vs the same model's pre-training tokens/s).

    python benchmarks/bench.py                # everything, fp32 (+ bf16 autocast with --bf16)
    python benchmarks/bench.py --only encoder --rounds 5
    python benchmarks/bench.py --only scale --sizes seed mid --plot scale.png
    python benchmarks/bench.py --only decode_sweep --contexts 256 2048 --batches 1 4
    python benchmarks/bench.py --out benchmarks/RESULTS-cpu-$(date +%F).txt
"""
import argparse, contextlib, gc, json, os, platform, statistics, subprocess, time, sys, warnings
from datetime import datetime, timezone
from pathlib import Path
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode
import transformers
from transformers import (BertConfig, BertForMaskedLM, BertForSequenceClassification,
                          DeepseekV3ForCausalLM, LlamaConfig, LlamaForCausalLM, ModernBertConfig, ModernBertForMaskedLM)
from transformers.cache_utils import DynamicCache
from shared_subspaces.model import CACHE_FIELD, attention_options, flops_per_token, kv_cache_per_token
from shared_subspaces.encoder import SharedSpaceEncoderForMaskedLM, SharedSpaceEncoderForSequenceClassification
from shared_subspaces.decoder import SharedSpaceDecoderForCausalLM, decode_tokens_per_s
from shared_subspaces.families import family_of, load_run_config
from shared_subspaces.data import bert_tokenizer, load_sst2
from shared_subspaces.layers import linear_cross_entropy
from shared_subspaces.doctor import matmul_peak, deepseek_like, hf_decode_tokens_per_s, random_batch   # one copy of each

ROOT = Path(__file__).resolve().parents[1]
TARGETS = {   # every target a report checks, in one place (set by issues 15 and 24): value -> met / NOT met
    "encoder MLM step, ours / HF Bert": 1.5, "encoder MLM step, MFU": 0.55,
    "decoder CLM step, ours MLA / HF DeepseekV3": 1.2, "decoder CLM step, ours MLA MFU": 0.70,
    "decode at 2048 context, batch 1, absorbed / HF": 2.0,
    "scale at 124M, measured / predicted speed-up": 0.9,
    "fine-tuning / pre-training tokens/s, ours": 0.8}

def check(name: str, value: float, shown: str | None = None, note: str = "") -> str:
    "The target line: `name` (and a `note` on how it was measured), the value (`shown`, or itself), and whether it meets `TARGETS[name]`."
    return f"  target: {name}{note} >= {TARGETS[name]:g}: {shown or f'{value:.2f}'} -> {verdict(value >= TARGETS[name])}"
warnings.filterwarnings("ignore", message=".*past_key_values.*deprecated")   # HF's rename notice, once per decode call
DEV = "cuda" if torch.cuda.is_available() else "cpu"

def sync():
    if DEV == "cuda": torch.cuda.synchronize()

def batch_of(config, B: int, T: int) -> dict:
    "Random `[B, T]` tokens with the config's family's labels (15% MLM targets, or next tokens): `doctor.random_batch`."
    return random_batch(family_of(config), config, B, T)

def config_file(name: str, **changes):
    "The model config of `configs/<name>.json` (read and checked by the library), with `changes` applied and validated."
    config = load_run_config(ROOT / f"configs/{name}.json").model
    return config.replace(**changes) if changes else config

OPTIMS = {"default": {}, "foreach": {"foreach": True}, "fused": {"fused": True}}   # AdamW implementations, same math

class Step:
    """One model's training step: forward + backward + AdamW (`optim`: `fused`, what our Trainer runs, or torch's
    `default` implementation, or `foreach`), optionally under bf16 autocast / torch.compile. Calling it with a batch steps on that batch instead."""
    def __init__(self, model, batch, bf16=False, compile=False, optim="fused"):
        self.model = model.to(DEV).train()
        self.fwd = torch.compile(self.model) if compile else self.model
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=1e-4, **OPTIMS[optim])
        self.batch, self.bf16 = batch, bf16
        self.params = sum(p.numel() for p in self.model.parameters())
    def __call__(self, batch=None):
        with torch.autocast(DEV, dtype=torch.bfloat16, enabled=self.bf16):
            loss = self.fwd(**(batch or self.batch)).loss
        loss.backward(); self.opt.step(); self.opt.zero_grad(set_to_none=True)
    def flops(self) -> int:
        with FlopCounterMode(display=False) as fc:
            with torch.autocast(DEV, dtype=torch.bfloat16, enabled=self.bf16):
                loss = self.model(**self.batch).loss
            loss.backward()
        self.opt.zero_grad(set_to_none=True)
        return fc.get_total_flops()

def interleaved(steps: dict, rounds: int, warmup: int = 2, spread: bool = False) -> dict:
    """Median seconds per call for each model, timed round-robin so drift hits every model alike
    (`spread`: (median, min, max) over the rounds)."""
    for s in steps.values():
        for _ in range(warmup): s()
    times = {k: [] for k in steps}
    for _ in range(rounds):
        for k, s in steps.items():
            sync(); t = time.perf_counter(); s(); sync(); times[k].append(time.perf_counter() - t)
    return {k: (statistics.median(v), min(v), max(v)) if spread else statistics.median(v) for k, v in times.items()}

def rate(work: float, secs: tuple, digits: int = 0) -> str:
    "`work` per second as 'median (min..max)' from (median, min, max) seconds: the spread over the rounds."
    med, lo, hi = secs
    return f"{work / med:.{digits}f} ({work / hi:.{digits}f}..{work / lo:.{digits}f})"

def verdict(ok: bool) -> str: return "met" if ok else "NOT met"

def table(rows, cols):
    w = [max(len(str(c)), *(len(f"{r.get(c, '')}") for r in rows)) for c in cols]
    line = lambda vals: "  ".join(f"{v!s:>{n}}" for v, n in zip(vals, w))
    return "\n".join([line(cols), line(["-" * n for n in w])] + [line([r.get(c, "") for c in cols]) for r in rows])

def isolated(suite: str, name: str, a) -> dict:
    "The same step in a fresh process: median ms/step of 3 after 2 warm-ups, and peak memory (RSS, or CUDA allocated)."
    cmd = [sys.executable, __file__, "--one", suite, name, "--batch", str(a.batch), "--sdpa", a.sdpa] + ["--bf16"] * a.bf16 + ["--compile"] * a.compile
    return json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1])

def _status(field: str) -> int:
    "A memory line of /proc/self/status in bytes (VmHWM: this process's peak RSS; unlike ru_maxrss not the parent's)."
    return int(next(l for l in open("/proc/self/status") if l.startswith(field)).split()[1]) * 1024

def _hwm() -> int: return _status("VmHWM")

def peak_window() -> int:
    "Start a peak-memory window here (CUDA: allocator peak; CPU: VmHWM reset to VmRSS); returns its base in bytes."
    if DEV == "cuda": torch.cuda.reset_peak_memory_stats(); return torch.cuda.memory_allocated()
    Path("/proc/self/clear_refs").write_text("5")
    return _status("VmRSS")

def peak_since(base: int) -> int:
    "Peak memory growth (bytes) since `peak_window()` returned `base`. On CPU: RSS, so freed memory the allocator reuses is not seen."
    return (torch.cuda.max_memory_allocated() if DEV == "cuda" else _hwm()) - base

def measure_one(suite: str, name: str, a):
    models, batch = MODELS[suite](a)
    base = _hwm()
    s = Step(models[name](), batch, a.bf16, a.compile)
    sec = interleaved({name: s}, rounds=5)[name]
    peak = torch.cuda.max_memory_allocated() if DEV == "cuda" else _hwm() - base
    print(json.dumps({"ms": sec * 1e3, "peak_mb": peak / 2 ** 20}))

def train_suite(suite: str, a, peak):
    models, batch = MODELS[suite](a)
    steps = {k: Step(m(), batch, a.bf16, a.compile) for k, m in models.items()}
    sec = interleaved(steps, a.rounds)
    ntok = batch["input_ids"].numel()
    rows = []
    for k, s in steps.items():
        f, iso = s.flops(), isolated(suite, k, a)
        rows.append({"model": k, "params (M)": f"{s.params / 1e6:.2f}", "ms/step": f"{sec[k] * 1e3:.0f}",
                     "tokens/s": f"{ntok / sec[k]:.0f}", "GFLOP/step": f"{f / 1e9:.1f}",
                     "GFLOP/s": f"{f / sec[k] / 1e9:.1f}", "MFU": f"{f / sec[k] / peak:.0%}",
                     "isolated tokens/s": f"{ntok / iso['ms'] * 1e3:.0f}", "peak MB": f"{iso['peak_mb']:.0f}",
                     "_tps": ntok / sec[k], "_iso": ntok / iso["ms"] * 1e3})
    return rows

def encoder_suite(a):
    cfgs = {k: config_file(f"encoder/{k}", hidden_dropout=0.0, attention_dropout=0.0) for k in ("mha_baseline", "best_mla", "best_mla_o")}
    common = dict(vocab_size=30522, hidden_size=256, num_hidden_layers=6, num_attention_heads=8, intermediate_size=1024,
                  max_position_embeddings=128)
    models = {f"ours {k}": (lambda c=c: SharedSpaceEncoderForMaskedLM(c)) for k, c in cfgs.items()}
    models["HF BertForMaskedLM"] = lambda: BertForMaskedLM(BertConfig(**common, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0))
    models["HF ModernBertForMaskedLM"] = lambda: ModernBertForMaskedLM(ModernBertConfig(**common, pad_token_id=0, bos_token_id=101,
                                                         eos_token_id=102, cls_token_id=101, sep_token_id=102))
    return models, batch_of(cfgs["mha_baseline"], a.batch, 128)

def _common(cfg):
    return dict(vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size, num_hidden_layers=cfg.num_hidden_layers,
                num_attention_heads=cfg.num_attention_heads, intermediate_size=cfg.intermediate_size,
                max_position_embeddings=cfg.max_position_embeddings, tie_word_embeddings=True)

def decoder_suite(a):
    cfg = config_file("decoder/seed_mla")
    H, Dh, common, ds = cfg.num_attention_heads, cfg.head_dim, _common(cfg), deepseek_like(cfg)
    models = {"ours seed_mla": lambda: SharedSpaceDecoderForCausalLM(cfg),
              "ours seed_mla_o": lambda: SharedSpaceDecoderForCausalLM(config_file("decoder/seed_mla_o")),
              "ours seed_mha": lambda: SharedSpaceDecoderForCausalLM(config_file("decoder/seed_mha")),
              "HF DeepseekV3ForCausalLM": lambda: DeepseekV3ForCausalLM(ds),
              "HF LlamaForCausalLM": lambda: LlamaForCausalLM(LlamaConfig(**common, num_key_value_heads=H, head_dim=Dh))}
    return models, batch_of(cfg, max(a.batch // 2, 1), 256)

MODELS = {"encoder": encoder_suite, "decoder": decoder_suite}   # the training suites' models and batch

def lm_head_alone(a) -> tuple[float, float]:
    "The decoder suite's fused LM head + cross-entropy alone, forward + backward: (seconds per step, FLOPs)."
    cfg = config_file("decoder/seed_mla")
    N, D, V, gen = max(a.batch // 2, 1) * 256, cfg.hidden_size, cfg.vocab_size, torch.Generator().manual_seed(0)
    h = torch.randn(N, D, generator=gen).to(DEV).requires_grad_()
    W = (torch.randn(V, D, generator=gen) * 0.02).to(DEV).requires_grad_()
    t = torch.randint(0, V, (N,), generator=gen).to(DEV)
    def step():
        with torch.autocast(DEV, dtype=torch.bfloat16, enabled=a.bf16): loss = linear_cross_entropy(h, W, t)
        loss.backward(); h.grad = W.grad = None
    return interleaved({"lm": step}, a.rounds)["lm"], 6 * N * D * V

@torch.no_grad()
def cache_bytes_per_token(model, tokens: int = 64) -> int:
    "Bytes per token (bf16) that a model's DynamicCache really holds after a prefill of `tokens`."
    cache = DynamicCache()
    model(torch.randint(5, 1000, (1, tokens), device=DEV), past_key_values=cache, use_cache=True)
    return 2 * sum(l.keys.numel() + l.values.numel() for l in cache.layers) // tokens

def decode_suite(a, ds_cfg):
    cfg = config_file("decoder/seed_mla")
    ours = SharedSpaceDecoderForCausalLM(cfg).to(DEV).eval()
    hf = DeepseekV3ForCausalLM(ds_cfg).to(DEV).eval()
    rows = []
    for ctx in (256, 2048):
        r = {"context": ctx}
        for _ in range(2):   # two interleaved passes, keep the better
            for name, f in (("ours naive", lambda: decode_tokens_per_s(ours, ctx, 16, absorb=False)),
                            ("ours absorbed", lambda: decode_tokens_per_s(ours, ctx, 16, absorb=True)),
                            ("HF DeepseekV3 (cached step)", lambda: hf_decode_tokens_per_s(hf, ctx, 16))):
                r[name] = max(r.get(name, 0), f())
        rows.append(r)
    mha = SharedSpaceDecoderForCausalLM(config_file("decoder/seed_mha")).to(DEV).eval()
    cache = {"ours MLA": cache_bytes_per_token(ours), "HF DeepseekV3": cache_bytes_per_token(hf),
             "ours MHA (seed_mha)": cache_bytes_per_token(mha)}
    assert cache["ours MLA"] == 2 * kv_cache_per_token(cfg), cache   # measured == the closed form
    return rows, cache

# ---- scale: MHA / GQA / MLA / MLA-o training tokens/s at three sizes, measured vs FLOP-predicted speed-up
SEED_FILES = {"encoder": {"mha": "encoder/mha_baseline", "mla": "encoder/best_mla", "mla_o": "encoder/best_mla_o"},
              "decoder": {"mha": "decoder/seed_mha", "mla": "decoder/seed_mla", "mla_o": "decoder/seed_mla_o"}}
SHAPE_KEYS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "head_dim", "intermediate_size", "rope_dims",
              "q_latent_dim", "kv_latent_dim", "o_latent_dim")
GPT2 = config_file("decoder/gpt2_124m_mla_o")
SIZES = {"seed": None,   # the seed's own configs (13M encoder)
         "mid": dict(hidden_size=512, num_hidden_layers=8, num_attention_heads=8, head_dim=64, intermediate_size=1536,
                     rope_dims=32, q_latent_dim=256, kv_latent_dim=128, o_latent_dim=128),
         "gpt2": {k: getattr(GPT2, k) for k in SHAPE_KEYS} | {"o_latent_dim": GPT2.hidden_size // 4}}
# gpt2: configs/decoder/gpt2_124m_mla_o.json's shape. At mid and gpt2 the output latent is D/4 (the seed's encoder
# ratio): at the file's D/2 the two factors W_OA, W_OB cost exactly MLA's one output projection, so MLA-o could not
# be faster than MLA there.
SCALE = {"encoder": dict(seq=128, batch={"seed": 16, "mid": 8, "gpt2": 4}, mask_rate=0.15),
         "decoder": dict(seq=256, batch={"seed": 8, "mid": 4, "gpt2": 2}, mask_rate=1.0)}
VARIANTS = ("mha", "gqa", "mla", "mla_o")

def scale_configs(family: str, size: str) -> dict:
    """The four variants at `size`: at 'seed' the seed's config files, elsewhere the family's seed MLA-o file with the
    size's shape; MLA drops the output latent, MHA every latent, GQA is MHA with a quarter of the k/v heads."""
    files, no_dropout = SEED_FILES[family], dict(hidden_dropout=0.0, attention_dropout=0.0)
    if size == "seed": c = {v: config_file(f, **no_dropout) for v, f in files.items()}
    else:
        o = config_file(files["mla_o"], **SIZES[size], **no_dropout)
        c = {"mla_o": o, "mla": o.replace(attention_type="mla", o_latent_dim=None),
             "mha": o.replace(attention_type="mha", q_latent_dim=None, kv_latent_dim=None, o_latent_dim=None)}
    c["gqa"] = c["mha"].replace(attention_type="gqa", num_key_value_heads=c["mha"].num_attention_heads // 4)
    return {v: c[v] for v in VARIANTS}

def predicted_flops(cfg, family: str) -> float:
    "Closed-form forward FLOPs per token (`flops_per_token`), the LM head counted on the tokens that have a label."
    s = SCALE[family]
    trunk = flops_per_token(cfg, s["seq"], causal=family == "decoder", lm_head=False)
    return trunk + s["mask_rate"] * (flops_per_token(cfg, s["seq"], causal=family == "decoder") - trunk)

def scale_suite(a, peak) -> list:
    rows = []
    for family in ("encoder", "decoder"):
        s = SCALE[family]
        for size in a.sizes:
            cfgs, B = scale_configs(family, size), a.scale_batch or s["batch"][size]
            model = SharedSpaceEncoderForMaskedLM if family == "encoder" else SharedSpaceDecoderForCausalLM
            batch = batch_of(cfgs["mha"], B, s["seq"])
            steps = {v: Step(model(c), batch, a.bf16, a.compile) for v, c in cfgs.items()}
            sec = interleaved(steps, a.rounds, warmup=1, spread=True)
            ntok, flops = B * s["seq"], {v: st.flops() for v, st in steps.items()}
            pred = {v: predicted_flops(c, family) for v, c in cfgs.items()}
            for v, st in steps.items():
                measured, predicted = sec["mha"][0] / sec[v][0], pred["mha"] / pred[v]
                rows.append({"family": family, "size": size, "model": v, "params (M)": f"{st.params / 1e6:.1f}",
                             "batch": f"{B} x {s['seq']}", "tokens/s": rate(ntok, sec[v]),
                             "GFLOP/step": f"{flops[v] / 1e9:.1f}", "MFU": f"{flops[v] / sec[v][0] / peak:.0%}",
                             "speed-up predicted": f"{predicted:.3f}", "speed-up counted": f"{flops['mha'] / flops[v]:.3f}",
                             "speed-up measured": f"{measured:.3f}", "measured/predicted": f"{measured / predicted:.0%}",
                             "speed-up range": f"{sec['mha'][1] / sec[v][2]:.2f}..{sec['mha'][2] / sec[v][1]:.2f}",
                             "_pred": predicted, "_meas": measured, "_flops": pred[v], "_tps": ntok / sec[v][0],
                             "_range": (sec["mha"][1] / sec[v][2], sec["mha"][2] / sec[v][1]),
                             "_params": st.params})
            del steps; gc.collect()
    return rows

def report_scale(rows, plot=None):
    cols = ["family", "size", "model", "params (M)", "batch", "tokens/s", "GFLOP/step", "MFU", "speed-up predicted",
            "speed-up counted", "speed-up measured", "speed-up range", "measured/predicted"]
    print("Scale: training tokens/s, median (min..max over rounds), speed-up vs MHA of the same size (predicted: "
          "closed-form FLOPs/token; counted: FlopCounterMode; measured: ratio of medians; range: its extremes over the "
          "rounds, MHA's fastest / this one's slowest to the reverse):\n" + table(rows, cols) + "\n")
    by = {(r["family"], r["size"], r["model"]): r for r in rows}
    for family, size in dict.fromkeys((r["family"], r["size"]) for r in rows):
        if size == "gpt2":
            for v in VARIANTS[1:]:
                r = by[family, size, v]
                if r["_pred"] > 1:
                    got = r["_meas"] / r["_pred"]
                    gain = (r["_meas"] - 1) / (r["_pred"] - 1)   # the stricter reading: the share of the predicted gain
                    print(check("scale at 124M, measured / predicted speed-up", got, f"{r['_meas']:.3f} / {r['_pred']:.3f} = {got:.0%} "
                                f"(of the predicted gain {r['_pred'] - 1:+.1%}: {gain:.0%})", f", {family} {v}"))
        o, l = by[family, size, "mla_o"], by[family, size, "mla"]
        if o["_flops"] < l["_flops"]:
            print(f"  target: {family} {size}, MLA-o ({o['_flops'] / l['_flops'] - 1:+.1%} FLOPs) at least as fast as MLA: "
                  f"{o['_tps']:.0f} vs {l['_tps']:.0f} tokens/s -> {verdict(o['_tps'] >= l['_tps'])}")
        else:
            print(f"  {family} {size}: MLA-o does {o['_flops'] / l['_flops'] - 1:+.1%} FLOPs of MLA (its output latent's two "
                  "factors cost what MLA's one output projection does): no MLA-o >= MLA target here")
    print()
    if plot: plot_scale(rows, plot)

def plot_scale(rows, path):
    import matplotlib; matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for ax, family in zip(axes, ("encoder", "decoder")):
        fr = [r for r in rows if r["family"] == family]
        for i, v in enumerate(VARIANTS[1:]):
            vr = [r for r in fr if r["model"] == v]
            x = [next(m["_params"] for m in fr if m["size"] == r["size"] and m["model"] == "mha") / 1e6 for r in vr]
            err = [[r["_meas"] - r["_range"][0] for r in vr], [r["_range"][1] - r["_meas"] for r in vr]]
            ax.errorbar(x, [r["_meas"] for r in vr], yerr=err, fmt="o-", capsize=3, color=f"C{i}", label=f"{v} measured")
            ax.plot(x, [r["_pred"] for r in vr], "x--", color=f"C{i}", label=f"{v} FLOP-predicted")
        ax.axhline(1, color="grey", lw=0.5); ax.set_xscale("log"); ax.set_title(family)
        ax.set_xlabel("MHA parameters (M)")
    axes[0].set_ylabel("training speed-up vs MHA"); axes[1].legend(fontsize=8)
    fig.tight_layout(); fig.savefig(path, dpi=120)
    print(f"  plot written to {path}\n")

# ---- decode_sweep: naive vs absorbed vs HF decode over contexts x batches
@torch.no_grad()
def synthetic_cache(model, batch: int, context: int) -> DynamicCache:
    """A DynamicCache holding `context` random positions in the layout a prefill leaves (read off a 1-token prefill):
    a decode step's cost does not depend on the cached values, and long contexts then cost no prefill."""
    probe = DynamicCache()
    model(torch.zeros(batch, 1, dtype=torch.long, device=DEV), use_cache=True, **{CACHE_FIELD: probe})
    cache = DynamicCache()
    for i, l in enumerate(probe.layers):
        kv = [torch.empty(*t.shape[:-2], context, t.shape[-1], dtype=t.dtype, device=DEV).uniform_(-1, 1)
              for t in (l.keys, l.values)]
        cache.update(*kv, i)
    return cache

def cache_bytes(cache) -> int: return sum(t.numel() * t.element_size() for l in cache.layers for t in (l.keys, l.values))

class Decoder:
    "Greedy single-token decode steps of one model on its own synthetic cache; each call times `steps` of them."
    def __init__(self, model, batch, context, steps, bf16=False, absorb=None):
        self.model, self.steps, self.bf16, self.absorb = model, steps, bf16, absorb
        with self.options(): self.cache = synthetic_cache(model, batch, context)
        self.bytes_per_token = cache_bytes(self.cache) / (batch * context)
        self.dtype = self.cache.layers[0].keys.dtype
        self.nxt, self.peak = torch.zeros(batch, 1, dtype=torch.long, device=DEV), 0
    def options(self):
        "bf16 autocast if asked, and the naive or absorbed path (ours)."
        ctx = contextlib.ExitStack()
        ctx.enter_context(torch.autocast(DEV, dtype=torch.bfloat16, enabled=self.bf16))
        if self.absorb is not None: ctx.enter_context(attention_options(self.model, absorb=self.absorb))
        return ctx
    @torch.no_grad()
    def __call__(self):
        base = peak_window()
        with self.options():
            for _ in range(self.steps):
                self.nxt = self.model(self.nxt, use_cache=True, **{CACHE_FIELD: self.cache}).logits[:, -1:].argmax(-1)
        self.peak = max(self.peak, peak_since(base))

def decode_models():
    "Our seed MLA decoder (naive and absorbed) and HF DeepSeek-V3 with its MLA dims, in eval mode."
    cfg = config_file("decoder/seed_mla")
    return cfg, SharedSpaceDecoderForCausalLM(cfg).to(DEV).eval(), DeepseekV3ForCausalLM(deepseek_like(cfg)).to(DEV).eval()

def sweep_estimate(cfg, a, peak, bandwidth=10e9) -> float:
    """Rough seconds for the sweep. Per step and sequence: the token's FLOPs plus, per cached position, expanding the
    latent and attending (naive, HF) or attending in the latent (absorbed), at half the matmul peak; copying the cache
    (DynamicCache appends by concatenation) and, naive, writing and reading the expanded k/v, at `bandwidth` bytes/s;
    10 ms per step; filling the three caches."""
    L, H, Dh, C, R = cfg.num_hidden_layers, cfg.num_attention_heads, cfg.head_dim, cfg.kv_latent_dim, cfg.rope_dims
    tok, size = flops_per_token(cfg, 1, causal=True), 2 if a.bf16 else 4
    cache = L * (C + R) * size                                                 # bytes per cached position
    per_pos = {"naive": (2 * L * (C * 2 * H * Dh + H * (2 * Dh + R)), 2 * cache + 4 * L * H * 2 * Dh * size),
               "absorbed": (4 * L * H * (C + R), 2 * cache)}
    per_pos["HF"] = per_pos["naive"]
    steps = a.rounds * a.decode_steps + 1
    return sum(steps * (b * (tok + ctx * f) / (0.5 * peak) + b * ctx * m / bandwidth + 0.01) + 3 * b * ctx * cache / 1e9
               for ctx in a.contexts for b in a.batches for f, m in per_pos.values())

def decode_sweep(a, peak) -> tuple:
    cfg, ours, hf = decode_models()
    est = sweep_estimate(cfg, a, peak)
    print(f"Decode sweep: {len(a.contexts)} contexts x {len(a.batches)} batches x 3 models, {a.rounds} rounds of "
          f"{a.decode_steps} steps; estimated {f'{est / 60:.1f} min' if est >= 60 else f'{est:.0f} s'} of decoding (rough FLOP model; building caches adds to it)", flush=True)
    rows, t0 = [], time.perf_counter()
    for B in a.batches:
        for ctx in a.contexts:
            runs = {"naive": Decoder(ours, B, ctx, a.decode_steps, a.bf16, absorb=False),
                    "absorbed": Decoder(ours, B, ctx, a.decode_steps, a.bf16, absorb=True),
                    "HF": Decoder(hf, B, ctx, a.decode_steps, a.bf16)}
            sec = interleaved(runs, a.rounds, warmup=1, spread=True)
            tps = {k: B * a.decode_steps / v[0] for k, v in sec.items()}
            rows.append({"batch": B, "context": ctx, **{f"{k} tokens/s": rate(B * a.decode_steps, v, 1) for k, v in sec.items()},
                         "absorbed/naive": f"{tps['absorbed'] / tps['naive']:.2f}", "absorbed/HF": f"{tps['absorbed'] / tps['HF']:.2f}",
                         **{f"{k} peak MB": f"{(r.peak + r.bytes_per_token * B * ctx) / 2 ** 20:.0f}" for k, r in runs.items()},
                         "_tps": tps})
            cache = {"ours MLA": (runs["absorbed"].bytes_per_token, runs["absorbed"].dtype),
                     "HF DeepseekV3": (runs["HF"].bytes_per_token, runs["HF"].dtype)}
            del runs; gc.collect()
    print(f"  (took {(time.perf_counter() - t0) / 60:.1f} min)")
    return rows, cache

def report_sweep(rows, cache):
    cols = [c for c in rows[0] if not c.startswith("_")]
    print("Decode tokens/s (batch x steps / s), median (min..max over rounds), seed_mla dims; peak MB: the cache plus "
          "the decode steps' peak growth (RSS on CPU: reused freed memory is not seen):\n" + table(rows, cols))
    dt = cache["ours MLA"][1]
    mha = kv_cache_per_token(config_file("decoder/seed_mha")) * dt.itemsize
    print("\n  cache bytes/token (measured in the caches): " + ", ".join(f"{k} {b:.0f} ({str(t).removeprefix('torch.')})" for k, (b, t) in cache.items())
          + f"; ours MHA (seed_mha, closed form) {mha} ({str(dt).removeprefix('torch.')})")
    for B in dict.fromkeys(r["batch"] for r in rows):
        br = [r for r in rows if r["batch"] == B]
        first = next((r["context"] for r in br if r["_tps"]["absorbed"] > 1.05 * r["_tps"]["naive"]), None)
        print(f"  crossover, batch {B}: absorbed first > 1.05x naive at context "
              + (str(first) if first else f"none up to {br[-1]['context']}"))
    r = next((r for r in rows if r["batch"] == 1 and r["context"] == 2048), None)
    if r:
        x = r["_tps"]["absorbed"] / r["_tps"]["HF"]
        print(check("decode at 2048 context, batch 1, absorbed / HF", x, f"{x:.2f}x"))
    print()

# ---- finetune: SST-2 training steps on real sentences vs the same model's pre-training tokens/s
def sst2_batches(tok, n: int, batch: int, grouped: bool, seed: int = 0) -> list:
    """`n` batches of `batch` SST-2 training sentences from one shuffled epoch, each padded to its own longest (dynamic
    padding). `grouped`: HF's length grouping (mega-batches of 50 batches, sorted by length). The `n` are drawn across
    the epoch, so a grouped sample is not just the long first batches."""
    ds = load_sst2("train")
    ids = tok(list(ds["sentence"]), truncation=True, max_length=128, return_token_type_ids=False)["input_ids"]
    labels, g = list(ds["label"]), torch.Generator().manual_seed(seed)
    order = torch.randperm(len(ids), generator=g).tolist()
    if grouped:
        mega = 50 * batch
        order = [i for k in range(0, len(order), mega) for i in sorted(order[k:k + mega], key=lambda i: -len(ids[i]))]
    chunks = [order[k:k + batch] for k in range(0, len(order) - batch + 1, batch)]
    out = []
    for c in sorted(torch.randperm(len(chunks), generator=g)[:n].tolist()):
        b = tok.pad({"input_ids": [ids[i] for i in chunks[c]]}, return_tensors="pt")
        out.append({"input_ids": b["input_ids"].to(DEV), "attention_mask": b["attention_mask"].to(DEV),
                    "labels": torch.tensor([labels[i] for i in chunks[c]], device=DEV)})
    return out

class Epoch:
    "A training step callable that runs one pass over a fixed list of batches (each call times the whole list)."
    def __init__(self, step, batches): self.step, self.batches = step, batches
    def __call__(self):
        for b in self.batches: self.step(b)

def finetune_suite(a, peak) -> list:
    cfg = config_file("encoder/best_mla_o")      # dropout as configured: real fine-tuning
    bert = BertConfig(vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size, num_hidden_layers=cfg.num_hidden_layers,
                      num_attention_heads=cfg.num_attention_heads, intermediate_size=cfg.intermediate_size,
                      max_position_embeddings=cfg.max_position_embeddings, num_labels=2)
    tok = bert_tokenizer()
    data = {g: sst2_batches(tok, a.ft_batches, 32, g) for g in (False, True)}
    pre, npre = batch_of(cfg, a.batch, 128), max(2, a.ft_batches // 4)
    ours = lambda: SharedSpaceEncoderForSequenceClassification(cfg.replace(num_labels=2))
    hf = lambda: BertForSequenceClassification(bert)
    runs = {("ours best_mla_o", "pre-training MLM", "fused"): Epoch(Step(SharedSpaceEncoderForMaskedLM(cfg), pre, a.bf16, a.compile, "fused"), [pre] * npre),
            ("HF Bert", "pre-training MLM", "fused"): Epoch(Step(BertForMaskedLM(bert), pre, a.bf16, a.compile, "fused"), [pre] * npre)}
    for name, make, optims in (("ours best_mla_o", ours, OPTIMS), ("HF Bert", hf, ["fused"])):
        for opt in optims:
            for g in (False, True):
                runs[name, "SST-2 length-grouped" if g else "SST-2 shuffled", opt] = Epoch(Step(make(), None, a.bf16, a.compile, opt), data[g])
    sec = interleaved(runs, a.rounds, warmup=1, spread=True)
    rows = []
    for (name, task, opt), run in runs.items():
        real = sum(int(b["attention_mask"].sum()) for b in run.batches)
        padded = sum(b["input_ids"].numel() for b in run.batches)
        rows.append({"model": name, "batches": task, "AdamW": opt, "tokens/s": rate(real, sec[name, task, opt]),
                     "sentences/s": rate(len(run.batches) * run.batches[0]["input_ids"].shape[0], sec[name, task, opt], 1),
                     "ms/step": f"{sec[name, task, opt][0] / len(run.batches) * 1e3:.0f}", "pad": f"{1 - real / padded:.0%}",
                     "_tps": real / sec[name, task, opt][0]})
    for r in rows:
        pre_tps = next(p["_tps"] for p in rows if p["model"] == r["model"] and p["batches"] == "pre-training MLM")
        r["of pre-training tokens/s"] = f"{r['_tps'] / pre_tps:.0%}"
        r["_ratio"] = r["_tps"] / pre_tps
    return rows

def report_finetune(rows, a):
    cols = ["model", "batches", "AdamW", "ms/step", "tokens/s", "sentences/s", "pad", "of pre-training tokens/s"]
    print(f"Fine-tuning steps on SST-2 train sentences (batch 32, dynamic padding, {a.ft_batches} batches drawn across "
          f"one epoch; tokens/s counts real tokens) vs pre-training MLM steps (batch {a.batch} x 128, {max(2, a.ft_batches // 4)} per round; its sentences are 128-token blocks); dropout 0.1; "
          "a plain loop (no Trainer):\n" + table(rows, cols))
    best = max((r for r in rows if r["model"].startswith("ours") and r["batches"] != "pre-training MLM"), key=lambda r: r["_ratio"])
    print("\n" + check("fine-tuning / pre-training tokens/s, ours", best["_ratio"], f"{best['_ratio']:.0%} ({best['batches']}, {best['AdamW']} AdamW)"))
    print("  optimisations tried (same math): length grouping, foreach / fused AdamW; not tried: sparse or frozen "
          "embedding gradients (AdamW's moments and weight decay touch every row each step, so they change the update)\n")

SDPA = {"flash": SDPBackend.FLASH_ATTENTION, "efficient": SDPBackend.EFFICIENT_ATTENTION, "math": SDPBackend.MATH,
        "cudnn": SDPBackend.CUDNN_ATTENTION}
CPU_SDPA = ("auto", "flash", "math")

class Tee:
    "stdout that also goes to a file (--out)."
    def __init__(self, path): self.file, self.out = open(path, "w"), sys.stdout
    def write(self, s): self.out.write(s); self.file.write(s)
    def flush(self): self.out.flush(); self.file.flush()

def machine() -> str:
    "Where this runs: device, CPU model and cores, threads, library versions."
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), None) \
        if Path("/proc/cpuinfo").exists() else platform.processor()
    gpu = f"{torch.cuda.get_device_name()} (cuda)" if DEV == "cuda" else "cpu"
    return (f"device {gpu}; CPU {cpu}, {os.cpu_count()} logical cores, {torch.get_num_threads()} torch threads; "
            f"torch {torch.__version__}, transformers {transformers.__version__}, python {platform.python_version()}")

def positive(s: str) -> int:
    if not s.isdigit() or int(s) < 1: raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {s!r}")
    return int(s)

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", choices=list(SUITES), nargs="*", help="suites to run (default: all)")
    ap.add_argument("--rounds", type=positive, default=5); ap.add_argument("--batch", type=positive, default=16)
    ap.add_argument("--bf16", action="store_true", help="bf16 autocast"); ap.add_argument("--compile", action="store_true")
    ap.add_argument("--sdpa", choices=["auto", *SDPA], default="auto",
                    help="torch SDPA kernel: this one, else math where it cannot run (flash needs equal q/k and v head "
                         "dims, which decoupled RoPE breaks); auto: torch picks; on CPU only flash and math exist")
    ap.add_argument("--sizes", choices=list(SIZES), nargs="+", default=list(SIZES), help="scale: model sizes")
    ap.add_argument("--scale-batch", type=positive, help="scale: sequences per step at every size (default: per size)")
    ap.add_argument("--plot", help="scale: write the speed-up plot (PNG, PDF, ...) here")
    ap.add_argument("--contexts", type=positive, nargs="+", default=[256, 512, 1024, 2048, 4096, 8192, 16384],
                    help="decode_sweep: context lengths")
    ap.add_argument("--batches", type=positive, nargs="+", default=[1, 4, 16, 32], help="decode_sweep: batch sizes")
    ap.add_argument("--decode-steps", type=positive, default=8, help="decode_sweep: timed decode steps per round")
    ap.add_argument("--ft-batches", type=positive, default=20, help="finetune: SST-2 batches per timed round")
    ap.add_argument("--json", help="also write the results here (default with --out: beside it, as .json)")
    ap.add_argument("--out", help="also write everything printed here (with the date and machine)")
    ap.add_argument("--one", nargs=2, metavar=("SUITE", "MODEL"), help=argparse.SUPPRESS)   # internal: one isolated run
    a = ap.parse_args()
    if DEV == "cpu" and a.sdpa not in CPU_SDPA:
        ap.error(f"--sdpa {a.sdpa}: no such kernel on cpu; allowed here: {', '.join(CPU_SDPA)}")
    a.contexts, a.batches = sorted(set(a.contexts)), sorted(set(a.batches))
    if a.out and not a.json: a.json = str(Path(a.out).with_suffix(".json"))
    with sdpa_kernel(list(dict.fromkeys([SDPA[a.sdpa], SDPBackend.MATH]))) if a.sdpa != "auto" else contextlib.nullcontext():
        if a.one: return measure_one(*a.one, a)
        run(a)

TRAIN_COLS = ["model", "params (M)", "ms/step", "tokens/s", "GFLOP/step", "GFLOP/s", "MFU", "isolated tokens/s", "peak MB"]

def report_encoder(rows, a, peak):
    print(f"Encoder MLM train step (batch {a.batch} x 128):\n" + table(rows, TRAIN_COLS) + "\n")
    for lab, key in (("interleaved", "_tps"), ("isolated", "_iso")):
        t = {r["model"]: r[key] for r in rows}
        best = max(v for k, v in t.items() if k.startswith("ours")) / t["HF BertForMaskedLM"]
        print(check("encoder MLM step, ours / HF Bert", best, f"{best:.2f}x", f" ({lab})"))
    mfu = max(float(r["MFU"].rstrip("%")) / 100 for r in rows if r["model"].startswith("ours"))
    print(check("encoder MLM step, MFU", mfu, f"{mfu:.0%}"))
    t = {r["model"]: r["_tps"] for r in rows}
    o, l, m = t["ours best_mla_o"], t["ours best_mla"], t["ours mha_baseline"]
    print(f"  target: MLA-o >= MLA >= MHA: {o:.0f} / {l:.0f} / {m:.0f} tokens/s -> {verdict(o >= l >= m)}\n")

def report_decoder(rows, a, peak):
    print(f"Decoder CLM train step (batch {max(a.batch // 2, 1)} x 256):\n" + table(rows, TRAIN_COLS) + "\n")
    for lab, key in (("interleaved", "_tps"), ("isolated", "_iso")):
        t = {r["model"]: r[key] for r in rows}
        r = t["ours seed_mla"] / t["HF DeepseekV3ForCausalLM"]
        print(check("decoder CLM step, ours MLA / HF DeepseekV3", r, f"{r:.2f}x", f" ({lab})"))
    ours = next(r for r in rows if r["model"] == "ours seed_mla")
    mfu = float(ours["MFU"].rstrip("%")) / 100
    print(check("decoder CLM step, ours MLA MFU", mfu, f"{mfu:.0%}"))
    step_s, step_f = float(ours["ms/step"]) / 1e3, float(ours["GFLOP/step"]) * 1e9
    lm_s, lm_f = lm_head_alone(a)
    rest_s, rest_f = step_s - lm_s, step_f - lm_f
    print(f"  where the time goes (ours seed_mla): the fused LM head + cross-entropy alone is {lm_f / step_f:.0%} of the "
          f"step's FLOPs and runs at {lm_f / lm_s / 1e9:.0f} GFLOP/s ({lm_f / lm_s / peak:.0%} of peak); the rest of the "
          f"step (trunk, attention, AdamW) at {rest_f / rest_s / 1e9:.0f} GFLOP/s ({rest_f / rest_s / peak:.0%})\n")

def report_decode(res, a, peak):
    rows, cache = res
    fmt = [{k: (f"{v:.1f}" if isinstance(v, float) else v) for k, v in r.items()} for r in rows]
    print("Decode, batch 1, tokens/s (seed_mla decoder):\n" + table(fmt, list(rows[0])))
    print("\n  cache bytes/token (bf16, measured in the caches): " + ", ".join(f"{k} {v}" for k, v in cache.items()))
    r = rows[-1]["ours absorbed"] / rows[-1]["HF DeepseekV3 (cached step)"]
    print(check("decode at 2048 context, batch 1, absorbed / HF", r, f"{r:.2f}x") + "\n")

SUITES = {   # name -> (measure(a, peak) -> results, report(results, a, peak)): each prints its table and its targets
    "encoder": (lambda a, peak: train_suite("encoder", a, peak), report_encoder),
    "decoder": (lambda a, peak: train_suite("decoder", a, peak), report_decoder),
    "decode": (lambda a, peak: decode_suite(a, deepseek_like(config_file("decoder/seed_mla"))), report_decode),
    "scale": (scale_suite, lambda rows, a, peak: report_scale(rows, a.plot)),
    "decode_sweep": (decode_sweep, lambda res, a, peak: report_sweep(*res)),
    "finetune": (finetune_suite, lambda rows, a, peak: report_finetune(rows, a))}

def run(a):
    t0 = time.perf_counter()
    if a.out: sys.stdout = Tee(a.out)
    peak = matmul_peak(torch.bfloat16 if a.bf16 else torch.float32, n=2048)
    print(f"# {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC: python benchmarks/bench.py {' '.join(sys.argv[1:])}\n# {machine()}")
    print(f"device {DEV}, threads {torch.get_num_threads()}, torch {torch.__version__}, dtype {'bf16 autocast' if a.bf16 else 'fp32'}"
          f"{', torch.compile' if a.compile else ''}, SDPA kernel {a.sdpa}{' (math where it cannot run)' if a.sdpa not in ('auto', 'math') else ''}; measured matmul peak {peak / 1e9:.1f} GFLOP/s\n", flush=True)
    out = {"peak_gflops": peak / 1e9}
    for name in a.only or list(SUITES):
        measure, report = SUITES[name]
        out[name] = measure(a, peak)
        report(out[name], a, peak)
    print(f"# all suites took {(time.perf_counter() - t0) / 60:.1f} min")
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=1, default=str))

if __name__ == "__main__":
    main()
