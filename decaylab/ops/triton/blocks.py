"""The device helpers every Triton kernel here shares: sequence and chunk bounds, program ids, tile loads and
stores, log2 cumulative decays, and advancing or retreating a [K, V] state block by one chunk or more (kernels.py,
chunk_parallel.py, segments.py). Moved out of kernels.py unchanged: they inline into the same code."""

import triton
import triton.language as tl

RCP_LN2 = tl.constexpr(1.4426950408889634)  # exp(x) = 2^(x / ln 2); exp2 has dedicated hardware


@triton.jit
def sequence_bounds(cu_seqlens, i_n, T, VARLEN: tl.constexpr):
    if VARLEN:
        bos = tl.load(cu_seqlens + i_n).to(tl.int64)
        eos = tl.load(cu_seqlens + i_n + 1).to(tl.int64)
    else:
        bos = i_n.to(tl.int64) * T
        eos = bos + T
    return bos, eos - bos


@triton.jit
def chunk_tokens(bos, seq_len, i_t, BT: tl.constexpr):
    """Packed token indices of chunk i_t (BT tokens) of the sequence [bos, bos + seq_len), and which lie inside it."""
    local = i_t * BT + tl.arange(0, BT)
    return bos + local, local < seq_len


@triton.jit
def program_ids(NB: tl.constexpr, ADJACENT: tl.constexpr):
    """(owner, block) of this program: the owner a (sequence or chunk, head), the block one of its NB key or value
    blocks. With ADJACENT the grid is one axis, the NB blocks of an owner next to each other in launch order: they
    run together, so the tiles they all read (q and k for value blocks, v and do for key blocks) come from HBM once
    and from L2 after. Otherwise the grid is (owners, NB), and an owner's blocks run a whole wave apart."""
    if ADJACENT:
        pid = tl.program_id(0)
        return pid // NB, pid % NB
    else:
        return tl.program_id(0), tl.program_id(1)


@triton.jit
def state_block_ids(K: tl.constexpr, V: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
                     ADJACENT: tl.constexpr):
    """(owner, i_k, i_v) of a program that carries the [BK, BV] block (i_k, i_v) of its owner's [K, V] state: the
    owner's (K / BK) x (V / BV) blocks decoded by program_ids, value blocks fastest."""
    i_nh, i_kv = program_ids((K // BK) * (V // BV), ADJACENT)
    return i_nh, i_kv // (V // BV), i_kv % (V // BV)


def launch_grid(owners: int, blocks: int, adjacent: bool) -> tuple[int, ...]:
    """The grid that program_ids decodes."""
    return (owners * blocks,) if adjacent else (owners, blocks)


@triton.jit
def boundary_index(boundary_offsets, i_n, T, VARLEN: tl.constexpr, STRIDE: tl.constexpr):
    """Index of this sequence's first saved state (one every STRIDE tokens, the sequence end excluded)."""
    if VARLEN:
        return tl.load(boundary_offsets + i_n).to(tl.int64)
    else:
        return i_n.to(tl.int64) * ((T - 1) // STRIDE)


@triton.jit
def load_tile(ptr, tok, valid, i_h, H: tl.constexpr, D: tl.constexpr, BD: tl.constexpr, i_d):
    """[BT, BD] tile (columns i_d*BD ...) of a [*, H, D] tensor at token rows `tok`, zeros past the sequence end,
    in its own dtype (bf16 tiles take half the registers; products with fp32 factors promote to fp32)."""
    offs = i_d * BD + tl.arange(0, BD)
    return tl.load(ptr + tok[:, None] * (H * D) + i_h * D + offs[None, :], mask=valid[:, None], other=0.0)


@triton.jit
def store_tile(ptr, x, tok, valid, i_h, H: tl.constexpr, D: tl.constexpr, BD: tl.constexpr, i_d):
    offs = i_d * BD + tl.arange(0, BD)
    tl.store(ptr + tok[:, None] * (H * D) + i_h * D + offs[None, :], x.to(ptr.dtype.element_ty), mask=valid[:, None])


@triton.jit
def load_chunk(ptr, tok, valid, i_h, H: tl.constexpr, D: tl.constexpr):
    return load_tile(ptr, tok, valid, i_h, H, D, D, 0)


@triton.jit
def store_chunk(ptr, x, tok, valid, i_h, H: tl.constexpr, D: tl.constexpr):
    store_tile(ptr, x, tok, valid, i_h, H, D, D, 0)


@triton.jit
def load_gates(g, tok, valid, i_h, H: tl.constexpr, K: tl.constexpr, BK: tl.constexpr, i_k,
                VECTOR: tl.constexpr):
    """Chunk-local cumulative log2 decay: [BT, BK] (vector; key channels i_k*BK ...) or [BT] (scalar), fp32;
    padding rows add 0."""
    return log2_cumsum(load_raw_gates(g, tok, valid, i_h, H, K, BK, i_k, VECTOR))


@triton.jit
def load_raw_gates(g, tok, valid, i_h, H: tl.constexpr, K: tl.constexpr, BK: tl.constexpr, i_k,
                    VECTOR: tl.constexpr):
    """The chunk's log decays as stored (natural log, the input dtype), zeros past the sequence end."""
    if VECTOR:
        return load_tile(g, tok, valid, i_h, H, K, BK, i_k)
    else:
        return tl.load(g + tok * H + i_h, mask=valid, other=0.0)


@triton.jit
def log2_cumsum(g_t):
    """Chunk-local cumulative decay in log2 units (fp32) of a chunk's natural-log decays (rows: tokens)."""
    return tl.cumsum(g_t.to(tl.float32), axis=0) * RCP_LN2


# Compiler options every launch names. Fused multiply-add is what the kernels were measured and tested with;
# Triton 3.9 warns that its default is about to change, so it is stated here rather than inherited.
COMPILE_OPTIONS = {"enable_fp_fusion": True}


def compile_options(opts: dict) -> dict:
    """COMPILE_OPTIONS plus the register cap (``maxnreg``) that a launch's options carry, if any."""
    return dict(COMPILE_OPTIONS, **{name: opts[name] for name in ("maxnreg",) if name in opts})


# Rows and columns of the state block one state-sweep program carries (fp32: 32 registers per thread on 4 warps).
STATE_BLOCK = 64


@triton.jit
def block_ptrs(ptr, i_state, K: tl.constexpr, V: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, i_k, i_v):
    """Pointers to the [BK, BV] block (i_k, i_v) of the [K, V] state number i_state."""
    offs_k = i_k * BK + tl.arange(0, BK)
    offs_v = i_v * BV + tl.arange(0, BV)
    return ptr + i_state.to(tl.int64) * (K * V) + offs_k[:, None] * V + offs_v[None, :]


@triton.jit
def state_ptrs(ptr, i_nh, K: tl.constexpr, V: tl.constexpr, BK: tl.constexpr, i_k):
    """Pointers to rows i_k*BK ... of the [K, V] state number i_nh."""
    return block_ptrs(ptr, i_nh, K, V, BK, V, i_k, 0)


@triton.jit
def decay_rows(x, G, VECTOR: tl.constexpr):
    """x * 2^G with G [BT, K] (vector) or [BT] (scalar, broadcast over columns)."""
    if VECTOR:
        return x * tl.exp2(G)
    else:
        return x * tl.exp2(G)[:, None]


@triton.jit
def advance_state(S, k_t, v_t, G, G_last, VECTOR: tl.constexpr, DT: tl.constexpr, PREC: tl.constexpr):
    """The state carried over one chunk: S <- 2^G_last * S + (k * 2^(G_last - G))^T v."""
    if VECTOR:
        k_end = decay_rows(k_t, G_last - G, VECTOR).to(DT)
        return S * tl.exp2(G_last)[:, None] + tl.dot(tl.trans(k_end), v_t.to(DT), input_precision=PREC)
    else:
        # one factor per token: it goes on the value tile, so the keys feed the dot straight from shared memory
        v_end = (v_t * tl.exp2(G_last - G)[:, None]).to(DT)
        return S * tl.exp2(G_last) + tl.dot(tl.trans(k_t.to(DT)), v_end, input_precision=PREC)


@triton.jit
def retreat_dstate(dS, q_t, do_t, G, G_last, scale, VECTOR: tl.constexpr, DT: tl.constexpr, PREC: tl.constexpr):
    """The state gradient carried back over one chunk: dS <- 2^G_last * dS + scale * (q * 2^G)^T do."""
    if VECTOR:
        q_start = decay_rows(q_t, G, VECTOR).to(DT)
        return dS * tl.exp2(G_last)[:, None] + tl.dot(tl.trans(q_start), do_t.to(DT), input_precision=PREC) * scale
    else:  # one factor per token, on the output-gradient tile (as in advance_state)
        do_start = (do_t * (tl.exp2(G) * scale)[:, None]).to(DT)
        return dS * tl.exp2(G_last) + tl.dot(tl.trans(q_t.to(DT)), do_start, input_precision=PREC)


@triton.jit
def advance_block(S, k, v, g, tok, valid, i_h, i_k, i_v, H: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
                   BK: tl.constexpr, BV: tl.constexpr, VECTOR: tl.constexpr, DT: tl.constexpr, PREC: tl.constexpr):
    """The [BK, BV] state block S carried forward over the chunk of tokens ``tok`` (every state element evolves
    alone, under scalar and vector decay alike, so blocks are independent), and the chunk's total log2 decay
    ([BK] for vector decay)."""
    G = load_gates(g, tok, valid, i_h, H, K, BK, i_k, VECTOR)
    G_last = tl.min(G, axis=0)
    k_t = load_tile(k, tok, valid, i_h, H, K, BK, i_k)
    v_t = load_tile(v, tok, valid, i_h, H, V, BV, i_v)
    return advance_state(S, k_t, v_t, G, G_last, VECTOR, DT, PREC), G_last


@triton.jit
def retreat_block(dS, q, do, g, scale, tok, valid, i_h, i_k, i_v, H: tl.constexpr, K: tl.constexpr,
                   V: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, VECTOR: tl.constexpr, DT: tl.constexpr,
                   PREC: tl.constexpr):
    """The [BK, BV] state-gradient block dS carried back over the chunk of tokens ``tok``."""
    G = load_gates(g, tok, valid, i_h, H, K, BK, i_k, VECTOR)
    q_t = load_tile(q, tok, valid, i_h, H, K, BK, i_k)
    do_t = load_tile(do, tok, valid, i_h, H, V, BV, i_v)
    return retreat_dstate(dS, q_t, do_t, G, tl.min(G, axis=0), scale, VECTOR, DT, PREC)


@triton.jit
def state_at(h, k, v, g, span_bos, span_end, i_h, i_k, i_v, H: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
             BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, J: tl.constexpr, VECTOR: tl.constexpr,
             DT: tl.constexpr, PREC: tl.constexpr):
    """The [BK, BV] state block entering sub-chunk J of a span of stored state (chunk_parallel.py), from h (fp32)
    entering the span: sub-chunks 0 .. J-1 replayed."""
    for i in tl.static_range(J):
        tok, valid = chunk_tokens(span_bos, span_end - span_bos, i, BT)
        h, _ = advance_block(h, k, v, g, tok, valid, i_h, i_k, i_v, H, K, V, BK, BV, VECTOR, DT, PREC)
    return h


@triton.jit
def dstate_at(dh, q, do, g, span_bos, span_end, scale, i_h, i_k, i_v, H: tl.constexpr, K: tl.constexpr,
              V: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, J: tl.constexpr,
              SUB: tl.constexpr, VECTOR: tl.constexpr, DT: tl.constexpr, PREC: tl.constexpr):
    """The [BK, BV] state-gradient block leaving sub-chunk J of a span of SUB sub-chunks, from dh (fp32) leaving the
    span: sub-chunks SUB-1 .. J+1 retreated over."""
    for r in tl.static_range(SUB - 1 - J):
        tok, valid = chunk_tokens(span_bos, span_end - span_bos, SUB - 1 - r, BT)
        dh = retreat_block(dh, q, do, g, scale, tok, valid, i_h, i_k, i_v, H, K, V, BK, BV, VECTOR, DT, PREC)
    return dh


@triton.jit
def chunk_value_sums(q, k, v, g, do, states, dstates, dv, At, k_end, span_bos, span_end, scale, tok, valid, i_ch,
                     i_h, i_k, H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr,
                     BV: tl.constexpr, J: tl.constexpr, SUB: tl.constexpr, VECTOR: tl.constexpr,
                     FUSE_DV: tl.constexpr, DT: tl.constexpr, PREC: tl.constexpr):
    """The chunk-parallel gradient kernels' walk over the value channels of sub-chunk J of span i_ch, in blocks of
    BV: (do h^T, v dh^T, do v^T, sum_v h * dh) with h the state entering the sub-chunk and dh the state gradient
    leaving it, both rebuilt from the span's; the last is one number (scalar decay) or one per key channel (vector).
    With FUSE_DV also each block's dv = At do + k_end dh, stored."""
    do_h = tl.zeros([BT, BK], dtype=tl.float32)
    v_dh = tl.zeros([BT, BK], dtype=tl.float32)
    dA = tl.zeros([BT, BT], dtype=tl.float32)
    if VECTOR:
        h_dh = tl.zeros([BK], dtype=tl.float32)
    else:
        h_dh = 0.0
    for i_v in range(0, V // BV):
        v_b = load_tile(v, tok, valid, i_h, H, V, BV, i_v)
        do_b = load_tile(do, tok, valid, i_h, H, V, BV, i_v)
        h_b = tl.load(block_ptrs(states, i_ch, K, V, BK, BV, i_k, i_v)).to(tl.float32)  # entering the span
        dh_b = tl.load(block_ptrs(dstates, i_ch, K, V, BK, BV, i_k, i_v)).to(tl.float32)  # leaving the span
        h_b = state_at(h_b, k, v, g, span_bos, span_end, i_h, i_k, i_v, H, K, V, BT, BK, BV, J, VECTOR, DT, PREC)
        dh_b = dstate_at(dh_b, q, do, g, span_bos, span_end, scale, i_h, i_k, i_v, H, K, V, BT, BK, BV, J, SUB,
                         VECTOR, DT, PREC)
        if VECTOR:
            h_dh += tl.sum(h_b * dh_b, axis=1)
        else:
            h_dh += tl.sum(tl.sum(h_b * dh_b, axis=1), axis=0)
        dh_b = dh_b.to(DT)
        dA += tl.dot(do_b, tl.trans(v_b), input_precision=PREC)
        do_h += tl.dot(do_b, tl.trans(h_b.to(DT)), input_precision=PREC)
        v_dh += tl.dot(v_b, tl.trans(dh_b), input_precision=PREC)
        if FUSE_DV:
            dv_b = tl.dot(At, do_b, input_precision=PREC) + tl.dot(k_end, dh_b, input_precision=PREC)
            store_tile(dv, dv_b, tok, valid, i_h, H, V, BV, i_v)
    return do_h, v_dh, dA, h_dh
