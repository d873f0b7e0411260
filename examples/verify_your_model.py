"""Load your own Hugging Face model in one call and let ``tl.verify`` say whether TEMPO is exact on it.

Runs offline in a few seconds: the "own model" here is a tiny random Qwen3 built from its
``transformers`` config class with a word-level tokenizer; replace both with
``AutoModelForCausalLM.from_pretrained(...)`` / ``AutoTokenizer.from_pretrained(...)``.

    python examples/verify_your_model.py
"""

from __future__ import annotations

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast, Qwen3Config, Qwen3ForCausalLM

import tempo_lens as tl

# --- your model and tokenizer (here: tiny, random, offline) ---
torch.manual_seed(0)
config = Qwen3Config(
    vocab_size=64, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
    num_attention_heads=4, num_key_value_heads=2, head_dim=16, attn_implementation="eager",
)  # fmt: skip
hf_model = Qwen3ForCausalLM(config).eval()
with torch.no_grad():  # sharper than the default init, so the check is not trivial
    for p in hf_model.parameters():
        if p.ndim == 2:
            p.normal_(0, 0.3)
core = Tokenizer(models.WordLevel({f"w{i}": i for i in range(64)}, unk_token="w0"))
core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, unk_token="w0")

# --- one call: a checked TransformerBridge (refused up front if TEMPO cannot be exact) ---
model = tl.load_model(hf_model, tokenizer=tokenizer)

# --- every step of a TEMPO battery against the model's own Hugging Face forward ---
report = tl.verify(model, prompts=["w3 w10 w17 w24 w31", "w5 w16 w27"], max_steps=3)
print("\n".join(report.lines()))

# --- then use it like any tempo_lens model ---
trace = tl.generate(model, "w3 w10 w17 w24 w31", selection_threshold=0.05, max_steps=4)
print(trace.bracket_text())
raise SystemExit(0 if report.ok else 1)
