"""Speed benchmark: our encoder/decoder against HF transformers at the same sizes, on this machine.

Training steps (forward + backward + AdamW) in tokens/s, FLOPs counted by torch's FlopCounterMode (what each model
really executes) and MFU against this machine's measured fp32 matmul peak; decode tokens/s and cache bytes/token
for naive vs absorbed MLA vs HF generate. Runs are interleaved (round-robin over models) and medians reported; each model is also run alone in a fresh
process ("isolated", 5 steps after 2 warm-ups, which also gives its peak memory: growth of the process's peak RSS on
CPU, allocated memory on CUDA), because
in one process the models' allocations interact (large logits freed and re-faulted each step).
Targets are printed, met or not; nothing here asserts a timing.

    python benchmarks/bench.py                # everything, fp32 (+ bf16 autocast with --bf16)
    python benchmarks/bench.py --only encoder --rounds 5
"""
import argparse, json, statistics, subprocess, time, sys
from pathlib import Path
import torch
from torch.utils.flop_counter import FlopCounterMode
from transformers import (BertConfig, BertForMaskedLM, DeepseekV3Config, DeepseekV3ForCausalLM, LlamaConfig,
                          LlamaForCausalLM, ModernBertConfig, ModernBertForMaskedLM)
from transformers.cache_utils import DynamicCache
from shared_subspaces.model import kv_cache_per_token
from shared_subspaces.encoder import SharedSpaceEncoderForMaskedLM, load_encoder_config
from shared_subspaces.decoder import SharedSpaceDecoderForCausalLM, load_decoder_config, decode_tokens_per_s

ROOT = Path(__file__).resolve().parents[1]
DEV = "cuda" if torch.cuda.is_available() else "cpu"

def sync():
    if DEV == "cuda": torch.cuda.synchronize()

def matmul_peak(dtype=torch.float32, n=2048, reps=10) -> float:
    "Measured dense matmul throughput (FLOP/s), median of `reps`."
    a, b = torch.randn(n, n, device=DEV, dtype=dtype), torch.randn(n, n, device=DEV, dtype=dtype)
    a @ b; ts = []
    for _ in range(reps):
        sync(); t = time.perf_counter(); a @ b; sync(); ts.append(time.perf_counter() - t)
    return 2 * n ** 3 / statistics.median(ts)

def mlm_batch(vocab, B, T, gen):
    ids = torch.randint(5, vocab, (B, T), generator=gen)
    labels = torch.full_like(ids, -100); pick = torch.rand(B, T, generator=gen) < 0.15
    labels[pick] = ids[pick]
    return {"input_ids": ids.to(DEV), "attention_mask": torch.ones_like(ids).to(DEV), "labels": labels.to(DEV)}

def clm_batch(vocab, B, T, gen):
    ids = torch.randint(5, vocab, (B, T), generator=gen).to(DEV)
    return {"input_ids": ids, "labels": ids}

class Step:
    "One model's training step: forward + backward + AdamW, optionally under bf16 autocast / torch.compile."
    def __init__(self, model, batch, bf16=False, compile=False):
        self.model = model.to(DEV).train()
        self.fwd = torch.compile(self.model) if compile else self.model
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=1e-4)
        self.batch, self.bf16 = batch, bf16
        self.params = sum(p.numel() for p in self.model.parameters())
    def __call__(self):
        with torch.autocast(DEV, dtype=torch.bfloat16, enabled=self.bf16):
            loss = self.fwd(**self.batch).loss
        loss.backward(); self.opt.step(); self.opt.zero_grad(set_to_none=True)
    def flops(self) -> int:
        with FlopCounterMode(display=False) as fc:
            with torch.autocast(DEV, dtype=torch.bfloat16, enabled=self.bf16):
                loss = self.model(**self.batch).loss
            loss.backward()
        self.opt.zero_grad(set_to_none=True)
        return fc.get_total_flops()

def interleaved(steps: dict, rounds: int, warmup: int = 2) -> dict:
    "Median seconds per step for each model, timed round-robin so drift hits every model alike."
    for s in steps.values():
        for _ in range(warmup): s()
    times = {k: [] for k in steps}
    for _ in range(rounds):
        for k, s in steps.items():
            sync(); t = time.perf_counter(); s(); sync(); times[k].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}

def table(rows, cols):
    w = [max(len(str(c)), *(len(f"{r.get(c, '')}") for r in rows)) for c in cols]
    line = lambda vals: "  ".join(f"{v!s:>{n}}" for v, n in zip(vals, w))
    return "\n".join([line(cols), line(["-" * n for n in w])] + [line([r.get(c, "") for c in cols]) for r in rows])

def isolated(suite: str, name: str, a) -> dict:
    "The same step in a fresh process: median ms/step of 3 after 2 warm-ups, and peak memory (RSS, or CUDA allocated)."
    cmd = [sys.executable, __file__, "--one", suite, name, "--batch", str(a.batch)] + ["--bf16"] * a.bf16 + ["--compile"] * a.compile
    return json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1])

def _hwm() -> int:
    "This process's peak resident memory in bytes (VmHWM: unlike ru_maxrss it does not inherit the parent's)."
    return int(next(l for l in open("/proc/self/status") if l.startswith("VmHWM")).split()[1]) * 1024

def measure_one(suite: str, name: str, a):
    models, batch = SUITES[suite](a)
    base = _hwm()
    s = Step(models[name](), batch, a.bf16, a.compile)
    sec = interleaved({name: s}, rounds=5)[name]
    peak = torch.cuda.max_memory_allocated() if DEV == "cuda" else _hwm() - base
    print(json.dumps({"ms": sec * 1e3, "peak_mb": peak / 2 ** 20}))

def train_suite(suite: str, a, peak):
    models, batch = SUITES[suite](a)
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
    cfgs = {k: load_encoder_config(ROOT / f"configs/encoder/{k}.json") for k in ("mha_baseline", "best_mla", "best_mla_o")}
    for c in cfgs.values(): c.hidden_dropout = c.attention_dropout = 0.0
    common = dict(vocab_size=30522, hidden_size=256, num_hidden_layers=6, num_attention_heads=8, intermediate_size=1024,
                  max_position_embeddings=128)
    models = {f"ours {k}": (lambda c=c: SharedSpaceEncoderForMaskedLM(c)) for k, c in cfgs.items()}
    models["HF BertForMaskedLM"] = lambda: BertForMaskedLM(BertConfig(**common, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0))
    models["HF ModernBertForMaskedLM"] = lambda: ModernBertForMaskedLM(ModernBertConfig(**common, pad_token_id=0, bos_token_id=101,
                                                         eos_token_id=102, cls_token_id=101, sep_token_id=102))
    return models, mlm_batch(30522, a.batch, 128, torch.Generator().manual_seed(0))

def _common(cfg):
    return dict(vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size, num_hidden_layers=cfg.num_hidden_layers,
                num_attention_heads=cfg.num_attention_heads, intermediate_size=cfg.intermediate_size,
                max_position_embeddings=cfg.max_position_embeddings, tie_word_embeddings=True)

def deepseek_like(cfg) -> DeepseekV3Config:
    "HF DeepSeek-V3 (dense, no MTP) with the MLA dims of our decoder config."
    return DeepseekV3Config(**_common(cfg), q_lora_rank=cfg.q_latent_dim, kv_lora_rank=cfg.kv_latent_dim,
                            qk_nope_head_dim=cfg.head_dim, qk_rope_head_dim=cfg.rope_dims, v_head_dim=cfg.head_dim,
                            first_k_dense_replace=cfg.num_hidden_layers, num_mtp_layers=0)

def decoder_suite(a):
    cfg = load_decoder_config(ROOT / "configs/decoder/seed_mla.json")
    H, Dh, common, ds = cfg.num_attention_heads, cfg.head_dim, _common(cfg), deepseek_like(cfg)
    models = {"ours seed_mla": lambda: SharedSpaceDecoderForCausalLM(cfg),
              "ours seed_mla_o": lambda: SharedSpaceDecoderForCausalLM(load_decoder_config(ROOT / "configs/decoder/seed_mla_o.json")),
              "ours seed_mha": lambda: SharedSpaceDecoderForCausalLM(load_decoder_config(ROOT / "configs/decoder/seed_mha.json")),
              "HF DeepseekV3ForCausalLM": lambda: DeepseekV3ForCausalLM(ds),
              "HF LlamaForCausalLM": lambda: LlamaForCausalLM(LlamaConfig(**common, num_key_value_heads=H, head_dim=Dh))}
    return models, clm_batch(cfg.vocab_size, max(a.batch // 2, 1), 256, torch.Generator().manual_seed(0))

SUITES = {"encoder": encoder_suite, "decoder": decoder_suite}

@torch.no_grad()
def hf_generate_tps(model, context, steps=16):
    ids = torch.randint(5, model.config.vocab_size, (1, context), device=DEV)
    cache = DynamicCache()   # passed as past_key_values, the name both transformers 5.23 and 5.24 take
    nxt = model(ids, use_cache=True, past_key_values=cache).logits[:, -1:].argmax(-1)
    t = time.perf_counter()
    for _ in range(steps):
        out = model(nxt, past_key_values=cache, use_cache=True); nxt = out.logits[:, -1:].argmax(-1)
    return steps / (time.perf_counter() - t)

@torch.no_grad()
def cache_bytes_per_token(model, tokens: int = 64) -> int:
    "Bytes per token (bf16) that a model's DynamicCache really holds after a prefill of `tokens`."
    cache = DynamicCache()
    model(torch.randint(5, 1000, (1, tokens), device=DEV), past_key_values=cache, use_cache=True)
    return 2 * sum(l.keys.numel() + l.values.numel() for l in cache.layers) // tokens

def decode_suite(a, ds_cfg):
    cfg = load_decoder_config(ROOT / "configs/decoder/seed_mla.json")
    ours = SharedSpaceDecoderForCausalLM(cfg).to(DEV).eval()
    hf = DeepseekV3ForCausalLM(ds_cfg).to(DEV).eval()
    rows = []
    for ctx in (256, 2048):
        r = {"context": ctx}
        for _ in range(2):   # two interleaved passes, keep the better
            for name, f in (("ours naive", lambda: decode_tokens_per_s(ours, ctx, 16, absorb=False)),
                            ("ours absorbed", lambda: decode_tokens_per_s(ours, ctx, 16, absorb=True)),
                            ("HF DeepseekV3 (cached step)", lambda: hf_generate_tps(hf, ctx))):
                r[name] = max(r.get(name, 0), f())
        rows.append(r)
    mha = SharedSpaceDecoderForCausalLM(load_decoder_config(ROOT / "configs/decoder/seed_mha.json")).to(DEV).eval()
    cache = {"ours MLA": cache_bytes_per_token(ours), "HF DeepseekV3": cache_bytes_per_token(hf),
             "ours MHA (seed_mha)": cache_bytes_per_token(mha)}
    assert cache["ours MLA"] == 2 * kv_cache_per_token(cfg), cache   # measured == the closed form
    return rows, cache

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", choices=["encoder", "decoder", "decode"], nargs="*")
    ap.add_argument("--rounds", type=int, default=5); ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--bf16", action="store_true", help="bf16 autocast"); ap.add_argument("--compile", action="store_true")
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--one", nargs=2, metavar=("SUITE", "MODEL"), help=argparse.SUPPRESS)   # internal: one isolated run
    a = ap.parse_args()
    if a.one: return measure_one(*a.one, a)
    only = set(a.only or ["encoder", "decoder", "decode"])
    peak = matmul_peak(torch.bfloat16 if a.bf16 else torch.float32)
    print(f"device {DEV}, threads {torch.get_num_threads()}, torch {torch.__version__}, dtype {'bf16 autocast' if a.bf16 else 'fp32'}"
          f"{', torch.compile' if a.compile else ''}; measured matmul peak {peak / 1e9:.1f} GFLOP/s\n")
    out = {"peak_gflops": peak / 1e9}
    cols = ["model", "params (M)", "ms/step", "tokens/s", "GFLOP/step", "GFLOP/s", "MFU", "isolated tokens/s", "peak MB"]
    if "encoder" in only:
        rows = train_suite("encoder", a, peak); out["encoder"] = rows
        print(f"Encoder MLM train step (batch {a.batch} x 128):\n" + table(rows, cols))
        t = {r["model"]: r["_tps"] for r in rows}
        ti = {r["model"]: r["_iso"] for r in rows}
        for lab, tt in (("interleaved", t), ("isolated", ti)):
            best = max(v for k, v in tt.items() if k.startswith("ours")) / tt["HF BertForMaskedLM"]
            print(f"{chr(10) if lab == 'interleaved' else ''}  target: ours >= 1.5x HF Bert ({lab}): {best:.2f}x -> {'met' if best >= 1.5 else 'NOT met'}")
        mfu = max(float(r["MFU"].rstrip("%")) for r in rows if r["model"].startswith("ours"))
        print(f"  target: >= 55% of matmul peak: {mfu:.0f}% -> {'met' if mfu >= 55 else 'NOT met'}")
        o, l, m = t["ours best_mla_o"], t["ours best_mla"], t["ours mha_baseline"]
        print(f"  target: MLA-o >= MLA >= MHA: {o:.0f} / {l:.0f} / {m:.0f} tokens/s -> {'met' if o >= l >= m else 'NOT met'}\n")
    if "decoder" in only:
        rows = train_suite("decoder", a, peak); out["decoder"] = rows
        print(f"Decoder CLM train step (batch {max(a.batch // 2, 1)} x 256):\n" + table(rows, cols))
        for lab, key in (("interleaved", "_tps"), ("isolated", "_iso")):
            t = {r["model"]: r[key] for r in rows}
            r = t["ours seed_mla"] / t["HF DeepseekV3ForCausalLM"]
            print(f"{chr(10) if lab == 'interleaved' else ''}  target: ours MLA >= 1.2x HF DeepseekV3 ({lab}): {r:.2f}x -> {'met' if r >= 1.2 else 'NOT met'}")
        print()
    if "decode" in only:
        rows, cache = decode_suite(a, deepseek_like(load_decoder_config(ROOT / "configs/decoder/seed_mla.json")))
        out["decode"], out["cache_bytes_per_token"] = rows, cache
        fmt = [{k: (f"{v:.1f}" if isinstance(v, float) else v) for k, v in r.items()} for r in rows]
        print("Decode, batch 1, tokens/s (seed_mla decoder):\n" + table(fmt, list(rows[0])))
        print("\n  cache bytes/token (bf16, measured in the caches): " + ", ".join(f"{k} {v}" for k, v in cache.items()))
        r = rows[-1]["ours absorbed"] / rows[-1]["HF DeepseekV3 (cached step)"]
        print(f"  target: absorbed >= 2x HF at 2048 context: {r:.2f}x -> {'met' if r >= 2 else 'NOT met'}")
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=1, default=str))

if __name__ == "__main__":
    main()
