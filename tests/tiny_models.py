"""Tiny random models built in-process for the tests (transformers + CPU torch, gguf's writer;
nothing downloaded): a Hugging Face `*ForCausalLM` with every parameter randomised, and a GGUF file
written from one as llama.cpp would, with a small byte-level BPE tokenizer."""
import gguf  # test extra: pip install -e ".[test]"; missing means a failure, not a skip
import numpy as np

from jaxrl_self.models.gguf import GGUF_TO_HF
from jaxrl_self.models.gguf_tokenizer import _bytes_to_unicode

_BASE = dict(vocab_size=160, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, rms_norm_eps=1e-6, max_position_embeddings=128)


def build_hf_model(model_type: str, seed: int = 0, **overrides):
    """A tiny random `*ForCausalLM` (eager attention, fp32) with every parameter randomised.

    HF initialises biases to 0 and norms to 1, which would hide layout mistakes; here norms are
    1 + noise and everything else is noise.
    """
    import torch
    import transformers

    classes = {
        "llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM),
        "mistral": (transformers.MistralConfig, transformers.MistralForCausalLM),
        "qwen2": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM),
        "qwen3": (transformers.Qwen3Config, transformers.Qwen3ForCausalLM),
    }
    config_cls, model_cls = classes[model_type]
    config = config_cls(**{**_BASE, **overrides}, attn_implementation="eager")
    torch.manual_seed(seed)
    model = model_cls(config).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = torch.randn_like(param) * 0.2
            param.copy_(noise + 1.0 if "norm" in name else noise)
    return model


T = gguf.GGMLQuantizationType
FILE = "tiny.gguf"
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
MERGES = ["h e", "l l", "Ġ w", "o r", "Ġw or", "ll o", "he llo", "Ġ t", "Ġt he", "1 2"]
USER_DEFINED = "<answer>"
CHAT_TEMPLATE = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
                 "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
# (quantization type of each GGUF tensor kind); norms are F32
QUANT = {"token_embd": T.Q8_0, "attn_q": T.Q4_0, "attn_k": T.Q4_0, "attn_v": T.Q4_1, "attn_output": T.Q4_1,
         "ffn_gate": T.Q8_0, "ffn_up": T.Q8_0, "ffn_down": T.F16, "output": T.Q4_1}
TEXTS = ["hello world", " the world12", "<|im_start|>user\nhello<|im_end|>", "Ünïcödé 🙂\n\t x", "<answer>12</answer>"]


def tokenizer_tokens() -> tuple[list[str], list[int]]:
    """Tokens (byte-level spelling) and their GGUF types: control specials, 256 bytes, merges, one user-defined."""
    tokens = SPECIALS + list(_bytes_to_unicode().values()) + [m.replace(" ", "") for m in MERGES] + [USER_DEFINED]
    types = [3] * len(SPECIALS) + [1] * (len(tokens) - len(SPECIALS) - 1) + [4]
    return tokens, types


def llama_cpp_permute(weight: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp's convert_hf_to_gguf permutation of q/k rows (HF -> GGUF)."""
    return weight.reshape(heads, 2, weight.shape[0] // heads // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def write_tiny_gguf(path: str, hf_model, tensor_types: dict = QUANT):
    """Writes `hf_model` (a tiny LlamaForCausalLM) as llama.cpp would, quantized per `tensor_types`."""
    cfg = hf_model.config
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_block_count(cfg.num_hidden_layers)
    writer.add_context_length(cfg.max_position_embeddings)
    writer.add_embedding_length(cfg.hidden_size)
    writer.add_feed_forward_length(cfg.intermediate_size)
    writer.add_head_count(cfg.num_attention_heads)
    writer.add_head_count_kv(cfg.num_key_value_heads)
    writer.add_rope_freq_base(float(cfg.rope_parameters["rope_theta"]))
    writer.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    writer.add_rope_dimension_count(cfg.hidden_size // cfg.num_attention_heads)
    writer.add_vocab_size(cfg.vocab_size)
    tokens, types = tokenizer_tokens()
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("smollm")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(MERGES)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_pad_token_id(2)
    writer.add_add_bos_token(False)
    writer.add_chat_template(CHAT_TEMPLATE)
    to_gguf = {hf.format(i=i): name.format(i=i) for name, hf in GGUF_TO_HF.items() for i in range(cfg.num_hidden_layers)}
    for name, param in hf_model.state_dict().items():
        gguf_name = to_gguf[name]
        weight = param.detach().numpy().astype(np.float32)
        kind = gguf_name.split(".")[-2]
        if kind == "attn_q":
            weight = llama_cpp_permute(weight, cfg.num_attention_heads)
        if kind == "attn_k":
            weight = llama_cpp_permute(weight, cfg.num_key_value_heads)
        qtype = tensor_types.get(kind, T.F32) if weight.ndim == 2 else T.F32
        data = weight if qtype == T.F32 else gguf.quants.quantize(weight, qtype)
        writer.add_tensor(gguf_name, data, raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def jax_logits(graphdef, params, ids: list[int]) -> np.ndarray:
    """A jaxrl_self model's logits `[T, V]` of one unpadded sequence of token `ids`."""
    import jax.numpy as jnp
    from flax import nnx

    tokens = jnp.asarray([ids], jnp.int32)
    positions = jnp.arange(len(ids))[None]
    logits, _ = nnx.merge(graphdef, params)(tokens, positions, jnp.ones_like(tokens, bool))
    return np.asarray(logits[0])


def hf_logits(model_dir, ids: list[int]) -> np.ndarray:
    """`transformers`' logits `[T, V]` of the model in `model_dir` on token `ids` (CPU torch, float32)."""
    import torch
    import transformers

    model = transformers.AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32).eval()
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].numpy()
