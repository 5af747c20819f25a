"""Speed options that must not change the numbers: activation checkpointing, torch.compile
capturing every variant as one graph, and (on CUDA only) the fused attention kernels."""

import pytest
import torch

import tubelet

VARIANTS = ["vivit_s16x2", "vivit_s16x2_fe", "vivit_s16x2_fsa", "vivit_s16x2_fdp", "vivit_s16x2_fe_avgpool"]
TINY = dict(hidden_size=32, num_layers=2, num_heads=4, mlp_dim=48, temporal_layers=2)


def tiny(name, **overrides):
    torch.manual_seed(0)
    model = tubelet.create_model(name, num_frames=4, image_size=32, num_classes=5, **{**TINY, **overrides})
    torch.nn.init.normal_(model.head.weight)  # the reference's zero head would block all gradients
    return model


def loss_and_grads(model, x, seed=1):
    torch.manual_seed(seed)  # the same dropout / stochastic-depth masks in both runs
    model.zero_grad()
    loss = model(x).square().sum()
    loss.backward()
    named = getattr(model, "_orig_mod", model).named_parameters()  # a compiled model wraps the original
    return loss.detach(), {n: p.grad.clone() for n, p in named}


def saved_bytes(model, x):
    """Bytes of activations that autograd keeps for the backward, from inside the encoders
    (the blocks that checkpointing covers; weights excluded)."""
    total, inside = 0, False
    weights = {p.data_ptr() for p in model.parameters()}

    def pack(t):
        nonlocal total
        if inside and t.untyped_storage().data_ptr() not in weights:
            total += t.numel() * t.element_size()
        return t

    def enter(*_):
        nonlocal inside
        inside = True

    def leave(*_):
        nonlocal inside
        inside = False

    hooks = [h for e in model.encoders for h in (e.register_forward_pre_hook(enter), e.register_forward_hook(leave))]
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(x).sum()
    for h in hooks:
        h.remove()
    return total


@pytest.mark.parametrize("name", VARIANTS)
def test_grad_checkpointing_gives_the_same_gradients_with_less_saved(name):
    model = tiny(name, dropout=0.1, attention_dropout=0.1, drop_path=0.2).train()
    x = torch.randn(2, 3, 4, 32, 32)
    loss, grads = loss_and_grads(model, x)
    before = saved_bytes(model, x)
    model.set_grad_checkpointing(True)
    assert all(e.grad_checkpointing for e in model.encoders)
    loss_ckpt, grads_ckpt = loss_and_grads(model, x)
    assert torch.equal(loss, loss_ckpt)
    for n, g in grads.items():
        torch.testing.assert_close(grads_ckpt[n], g, rtol=1e-5, atol=1e-6, msg=n)
    assert saved_bytes(model, x) < before / 4
    with torch.no_grad():  # no recomputation (and no checkpoint warnings) without autograd
        model.eval()(x)


@pytest.mark.parametrize("name", VARIANTS)
def test_compile_captures_forward_and_backward_in_one_graph(name):
    """fullgraph=True raises on any graph break; aot_eager also traces the backward."""
    model = tiny(name, num_layers=1, temporal_layers=1, dropout=0.1).train()  # one layer: compiles faster
    x = torch.randn(2, 3, 4, 32, 32)
    loss, grads = loss_and_grads(model, x)
    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    loss_c, grads_c = loss_and_grads(compiled, x)
    torch.testing.assert_close(loss_c, loss)
    for n, g in grads.items():
        torch.testing.assert_close(grads_c[n], g, rtol=1e-4, atol=1e-5, msg=n)


def test_compile_captures_checkpointed_and_frame_sampling_models():
    model = tiny("vivit_s16x2_fsa", tokeniser="frame_sampling", sampled_frames=2, drop_path=0.1)
    model.train().set_grad_checkpointing(True)
    x = torch.randn(1, 3, 4, 32, 32)
    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    loss, grads = loss_and_grads(model, x)
    loss_c, grads_c = loss_and_grads(compiled, x)
    torch.testing.assert_close(loss_c, loss)
    for n, g in grads.items():
        torch.testing.assert_close(grads_c[n], g, rtol=1e-4, atol=1e-5, msg=n)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="fused attention kernels need CUDA")
@pytest.mark.parametrize("name", VARIANTS)
@pytest.mark.parametrize("kv_heads", [None, 2])
def test_every_variant_runs_on_the_fused_attention_kernels(name, kv_heads):
    """With SDPA restricted to one fused kernel, any tensor that kernel cannot take raises
    instead of silently falling back to the quadratic-memory math kernel. bf16 takes
    FlashAttention (grouped heads included) and, without groups, memory-efficient attention."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    model = tiny(name, hidden_size=128, num_heads=4, num_kv_heads=kv_heads).cuda().to(torch.bfloat16)
    x = torch.randn(2, 3, 4, 32, 32, device="cuda", dtype=torch.bfloat16)
    with sdpa_kernel([SDPBackend.MATH]):
        reference = model(x).float()
    kernels = [SDPBackend.FLASH_ATTENTION] + ([SDPBackend.EFFICIENT_ATTENTION] if kv_heads is None else [])
    for kernel in kernels:
        with sdpa_kernel([kernel]):
            out = model(x)
            out.float().square().sum().backward()
        torch.testing.assert_close(out.float(), reference, rtol=2e-2, atol=2e-2, msg=str(kernel))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="fused attention kernels need CUDA")
@pytest.mark.parametrize("name", ["vivit_s16x2", "vivit_s16x2_fsa", "vivit_s16x2_fdp"])
def test_float32_grouped_query_attention_avoids_the_math_kernel(name):
    """In float32 only the memory-efficient kernel is fused; it takes no grouped heads, so the
    key/value heads are repeated rather than falling back to quadratic memory."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    model = tiny(name, hidden_size=128, num_heads=4, num_kv_heads=2).cuda()
    x = torch.randn(2, 3, 4, 32, 32, device="cuda")
    reference = model(x)
    with sdpa_kernel([SDPBackend.EFFICIENT_ATTENTION]):
        out = model(x)
        out.square().sum().backward()
    torch.testing.assert_close(out, reference, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("tokeniser", ["tubelet", "frame_sampling"])
def test_tokenisers_are_their_convolution_with_contiguous_time_major_tokens(tokeniser):
    """The patch/tube projection runs as one matrix product; it must equal the convolution whose
    parameters it keeps, and hand the encoder contiguous tokens (a transposed layout would
    follow the residual stream of Models 3 and 4 through every block)."""
    model = tiny("vivit_s16x2_fdp", tokeniser=tokeniser, sampled_frames=4)
    x = torch.randn(2, 3, 4, 32, 32)
    tokens = model.tokeniser(x)
    conv = model.tokeniser.proj
    if tokeniser == "tubelet":
        expected = conv(x).flatten(3).permute(0, 2, 3, 1)  # (B, D, t, h, w) -> (B, t, h*w, D)
    else:
        expected = conv(x.transpose(1, 2).flatten(0, 1)).flatten(2).transpose(1, 2).unflatten(0, (2, 4))
    assert tokens.is_contiguous() and tokens.shape == expected.shape
    torch.testing.assert_close(tokens, expected, rtol=1e-5, atol=1e-5)
