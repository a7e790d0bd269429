"""Scalar-decay sweeps for Hopper (sm_90) in Gluon: the forward and the reverse state-gradient sweep with dv.

They compute what kernels.forward_kernel and chunk_parallel.chunk_dstates_dv_kernel compute for scalar decay (same
chunk of 64 tokens, same stored bf16 states, same formulas; see those kernels), on Hopper's own machinery:

- q, k and v (or do) arrive by TMA into a ring of STAGES shared-memory slots, each with its mbarrier; a step issues
  the copies of the chunk STAGES - 1 ahead before it waits for its own, so they have a whole step to land.
- Each step's products run on asynchronous wgmma. A step's scores (q k^T, or k q^T in reverse) need no state, so
  the next chunk's are started while this chunk's state update runs: a sweep is a chain of dependent steps, and
  with one or two programs per SM the tensor cores would otherwise idle through each step's exponentials, masks
  and stores. That overlap is what Triton's pipeliner does not give these loops (docs/benchmarks-log.md, "Hopper
  sweeps in Gluon").
- The state block a step multiplies by sits in shared memory anyway (a wgmma operand), so it is stored to the
  chunk-state buffer from there by a TMA copy; each chunk's o (or dv) tile leaves the same way, staged in shared
  memory (four-byte stores from the wgmma layout cost the step many instructions), a sequence's short last chunk
  by masked stores.

TMA copies whole [64, D] tiles: a sequence's last chunk may hold the next sequence's tokens (or zeros past the
tensor end). Every term where such rows could enter a kept result is masked: the decayed values and output
gradients that build the states, and the reverse scores' columns; the forward scores are causal.

Gluon does not run under TRITON_INTERPRET: CI compiles these kernels for sm_90 (tests/ops/test_triton_compile.py);
their results are tested on the GPU (tests/ops/test_triton_gpu.py).
"""

from decaylab.ops.triton.gluon.language import bounds, fence_async_shared, gl, gluon, log2_cumsum, mbarrier, \
    mma_layout, tma, tma_load, tma_store, warpgroup_mma, warpgroup_mma_wait


@gluon.jit
def _ring(a_desc, b_desc, c_desc, STAGES: gl.constexpr, BT: gl.constexpr, K: gl.constexpr,
          BV: gl.constexpr):
    """Shared memory for STAGES chunks in flight: [BT, K], [BT, K] and [BT, BV] tiles per slot, and one
    initialized mbarrier per slot that counts the slot's TMA copies."""
    a_ring = gl.allocate_shared_memory(a_desc.dtype, [STAGES, BT, K], a_desc.layout)
    b_ring = gl.allocate_shared_memory(b_desc.dtype, [STAGES, BT, K], b_desc.layout)
    c_ring = gl.allocate_shared_memory(c_desc.dtype, [STAGES, BT, BV], c_desc.layout)
    bars = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    for i in gl.static_range(STAGES):
        mbarrier.init(bars.index(i), count=1)
    return a_ring, b_ring, c_ring, bars


@gluon.jit
def _issue_step(step, NT, bos, a_desc, b_desc, c_desc, col_ab, col_c, a_ring, b_ring, c_ring, bars,
                STAGES: gl.constexpr, BT: gl.constexpr, REVERSE: gl.constexpr):
    """The TMA copies of walk step ``step``'s three tiles into ring slot step % STAGES, counted on the slot's
    barrier: chunk ``step``, or NT - 1 - step walking backwards (REVERSE); none past the walk's end."""
    if step < NT:
        if REVERSE:
            chunk = NT - 1 - step
        else:
            chunk = step
        row = (bos + chunk * BT).to(gl.int32)
        bar = bars.index(step % STAGES)
        mbarrier.expect(bar, a_desc.block_type.nbytes + b_desc.block_type.nbytes + c_desc.block_type.nbytes)
        tma_load(a_desc, [row, col_ab], bar, a_ring.index(step % STAGES))
        tma_load(b_desc, [row, col_ab], bar, b_ring.index(step % STAGES))
        tma_load(c_desc, [row, col_c], bar, c_ring.index(step % STAGES))


@gluon.jit
def _start_scores(step, NT, a_ring, b_ring, bars, STAGES: gl.constexpr, BT: gl.constexpr,
                  layout: gl.constexpr):
    """a b^T of walk step ``step``'s [BT, K] tiles, started on the tensor cores once they have landed and
    returned unwaited. Past the walk's end it multiplies stale tiles, a result nobody reads."""
    mbarrier.wait(bars.index(step % STAGES), (step // STAGES) & 1, pred=step < NT)
    return warpgroup_mma(a_ring.index(step % STAGES), b_ring.index(step % STAGES).permute((1, 0)),
                         gl.zeros([BT, BT], gl.float32, layout=layout), use_acc=False, is_async=True)


@gluon.jit
def _stage_state(S, smem, desc, row, col, STORE: gl.constexpr):
    """S, the fp32 state (or its gradient) carried by the walk, into ``smem`` as this step's wgmma operand,
    once the previous copy out of it is done; with STORE also copied to the chunk-state buffer at
    [row, col]."""
    tma.store_wait(0)
    smem.store(S.to(desc.dtype))
    fence_async_shared()
    if STORE:
        tma_store(desc, [row, col], smem)


@gluon.jit
def _walk_indices(i_nh, i_v, K: gl.constexpr, V: gl.constexpr, BV: gl.constexpr, BT: gl.constexpr,
                  s_layout: gl.constexpr, o_layout: gl.constexpr, g_layout: gl.constexpr):
    """A sweep's index vectors: the scores' rows and columns, the [BT, BV] outputs' rows and columns, a
    chunk's tokens for the gates, and the offsets of this program's [K, BV] block in a [N, H, K, V] state."""
    rows_o = gl.arange(0, BT, layout=gl.SliceLayout(1, o_layout))
    cols_o = gl.arange(0, BV, layout=gl.SliceLayout(0, o_layout))
    keys = gl.arange(0, K, layout=gl.SliceLayout(1, o_layout))
    rows_s = gl.arange(0, BT, layout=gl.SliceLayout(1, s_layout))
    cols_s = gl.arange(0, BT, layout=gl.SliceLayout(0, s_layout))
    return (rows_s, cols_s, rows_o, cols_o, gl.arange(0, BT, layout=g_layout),
            i_nh.to(gl.int64) * K * V + keys[:, None] * V + i_v * BV + cols_o[None, :])


@gluon.jit
def _write_out(x, smem, desc, ptr, tok0, rows_left, col, rows, cols, H: gl.constexpr, V: gl.constexpr,
               BT: gl.constexpr):
    """A chunk's [BT, BV] result into tokens tok0 on, columns col on: a whole chunk by a TMA copy out of
    ``smem`` (free once the step's first store_wait has passed), a sequence's short last chunk by masked
    stores (a whole-tile copy would write the next sequence's rows)."""
    if rows_left >= BT:
        smem.store(x.to(desc.dtype))
        fence_async_shared()
        tma_store(desc, [tok0.to(gl.int32), col], smem)
    else:
        offs = (tok0 + rows).to(gl.int64)[:, None] * (H * V) + col + cols[None, :]
        gl.store(ptr + offs, x.to(ptr.dtype.element_ty), mask=(rows < rows_left)[:, None])


@gluon.jit
def _chunk_gates(g_raw, s_layout: gl.constexpr, o_layout: gl.constexpr):
    """The chunk's cumulative log2 decay along the scores' rows and columns and the outputs' rows, and its
    total."""
    G, G_last = log2_cumsum(g_raw)
    rows = gl.convert_layout(G, gl.SliceLayout(1, s_layout))
    cols = gl.convert_layout(G, gl.SliceLayout(0, s_layout))
    return rows, cols, gl.convert_layout(G, gl.SliceLayout(1, o_layout)), G_last


@gluon.jit
def _finish(scores, bars, STAGES: gl.constexpr):
    """The walk's last started scores and state copy waited for, and the barriers released."""
    warpgroup_mma_wait(0, deps=[scores])
    tma.store_wait(0)
    for i in gl.static_range(STAGES):
        mbarrier.invalidate(bars.index(i))


@gluon.jit
def hopper_forward_kernel(q_desc, k_desc, v_desc, s_desc, o_desc, g, o, h0, ht, cu_seqlens, state_first,
                          scale, T, H: gl.constexpr, K: gl.constexpr, V: gl.constexpr, BV: gl.constexpr,
                          BT: gl.constexpr, STAGES: gl.constexpr, VARLEN: gl.constexpr, HAS_H0: gl.constexpr,
                          STORE_HT: gl.constexpr, SAVE_STATES: gl.constexpr, num_warps: gl.constexpr):
    """One program per (sequence, head, block of BV value channels), carrying the [K, BV] fp32 state:
    o = scale (2^G (q S) + A v), S <- 2^G_last S + k^T (2^(G_last - G) v), A the masked decayed scores."""
    i_nh, i_v = gl.program_id(0) // (V // BV), gl.program_id(0) % (V // BV)
    i_n, i_h = i_nh // H, i_nh % H
    bos, seq_len = bounds(cu_seqlens, i_n, T, VARLEN)
    NT = gl.cdiv(seq_len, BT)
    DT: gl.constexpr = q_desc.dtype
    s_layout: gl.constexpr = mma_layout(BT, num_warps)  # [BT, BT] scores
    o_layout: gl.constexpr = mma_layout(BV, num_warps)  # [BT, BV] outputs and the [K, BV] state
    a_operand: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=o_layout, k_width=2)
    g_layout: gl.constexpr = gl.BlockedLayout([1], [32], [num_warps], [0])

    q_ring, k_ring, v_ring, bars = _ring(q_desc, k_desc, v_desc, STAGES, BT, K, BV)
    s_smem = gl.allocate_shared_memory(DT, [K, BV], s_desc.layout)  # the state entering the chunk
    v_end_smem = gl.allocate_shared_memory(DT, [BT, BV], v_desc.layout)  # values decayed to the chunk end
    o_smem = gl.allocate_shared_memory(DT, [BT, BV], o_desc.layout)  # the output, copied out by TMA
    col_v = i_h * V + i_v * BV
    for i in gl.static_range(STAGES - 1):
        _issue_step(i, NT, bos, q_desc, k_desc, v_desc, i_h * K, col_v, q_ring, k_ring, v_ring, bars, STAGES,
                    BT, False)

    rows_s, cols_s, rows_o, cols_o, t_g, state_offs = _walk_indices(i_nh, i_v, K, V, BV, BT, s_layout, o_layout,
                                                                    g_layout)
    causal = rows_s[:, None] >= cols_s[None, :]
    if HAS_H0:
        S = gl.load(h0 + state_offs)
    else:
        S = gl.zeros([K, BV], gl.float32, layout=o_layout)
    if SAVE_STATES:
        c0 = gl.load(state_first + i_n)
    else:
        c0 = 0

    g_next = gl.load(g + (bos + t_g) * H + i_h, mask=t_g < seq_len, other=0.0)
    A_next = _start_scores(0, NT, q_ring, k_ring, bars, STAGES, BT, s_layout)
    for i_t in range(0, NT):
        slot = i_t % STAGES
        _issue_step(i_t + STAGES - 1, NT, bos, q_desc, k_desc, v_desc, i_h * K, col_v, q_ring, k_ring,
                    v_ring, bars, STAGES, BT, False)
        g_raw = g_next
        t_next = (i_t + 1) * BT + t_g
        g_next = gl.load(g + (bos + t_next) * H + i_h, mask=t_next < seq_len, other=0.0)

        _stage_state(S, s_smem, s_desc, ((c0 + i_t) * H + i_h).to(gl.int32) * K, i_v * BV, SAVE_STATES)
        q_t, k_t, v_t = q_ring.index(slot), k_ring.index(slot), v_ring.index(slot)
        qS = warpgroup_mma(q_t, s_smem, gl.zeros([BT, BV], gl.float32, layout=o_layout), use_acc=False,
                           is_async=True)
        G_rows, G_cols, G_o, G_last = _chunk_gates(g_raw, s_layout, o_layout)
        A = warpgroup_mma_wait(1, deps=[A_next])
        A = gl.where(causal, A * gl.exp2(G_rows[:, None] - G_cols[None, :]), 0.0)
        Av = warpgroup_mma(gl.convert_layout(A.to(DT), a_operand), v_t,
                           gl.zeros([BT, BV], gl.float32, layout=o_layout), use_acc=False, is_async=True)
        valid = (i_t * BT + rows_o) < seq_len
        v_end = v_t.load(o_layout).to(gl.float32) * gl.exp2(G_last - G_o)[:, None]
        v_end = gl.where(valid[:, None], v_end, 0.0)
        v_end_smem.store(v_end.to(DT))
        fence_async_shared()
        qS, Av = warpgroup_mma_wait(0, deps=[qS, Av])
        o_t = (Av + qS * gl.exp2(G_o)[:, None]) * scale
        _write_out(o_t, o_smem, o_desc, o, bos + i_t * BT, seq_len - i_t * BT, col_v, rows_o, cols_o, H, V, BT)
        S = warpgroup_mma(k_t.permute((1, 0)), v_end_smem, S * gl.exp2(G_last), is_async=True)
        # the next chunk's scores need no state: they run alongside the state update
        A_next = _start_scores(i_t + 1, NT, q_ring, k_ring, bars, STAGES, BT, s_layout)
        S = warpgroup_mma_wait(1, deps=[S])
    _finish(A_next, bars, STAGES)
    if STORE_HT:
        gl.store(ht + state_offs, S)


@gluon.jit
def hopper_dstates_dv_kernel(q_desc, k_desc, do_desc, ds_desc, dv_desc, g, dv, dht, dh0, cu_seqlens, first,
                             scale, T, H: gl.constexpr, K: gl.constexpr, V: gl.constexpr, BV: gl.constexpr,
                             BT: gl.constexpr, STAGES: gl.constexpr, HAS_DHT: gl.constexpr,
                             num_warps: gl.constexpr):
    """One program per (sequence, head, block of BV value channels), walking the chunks backwards with the
    [K, BV] fp32 state gradient dS (leaving the chunk): stores dS per chunk, makes
    dv = At do + 2^(G_last - G) (k dS) with At[s, t] = scale (k_s . q_t) 2^(G_t - G_s) for t >= s, and carries
    dS <- 2^G_last dS + q^T (scale 2^G do)."""
    i_nh, i_v = gl.program_id(0) // (V // BV), gl.program_id(0) % (V // BV)
    i_n, i_h = i_nh // H, i_nh % H
    bos, seq_len = bounds(cu_seqlens, i_n, T, True)
    NT = gl.cdiv(seq_len, BT)
    c0 = gl.load(first + i_n)
    DT: gl.constexpr = q_desc.dtype
    s_layout: gl.constexpr = mma_layout(BT, num_warps)
    o_layout: gl.constexpr = mma_layout(BV, num_warps)
    a_operand: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=o_layout, k_width=2)
    g_layout: gl.constexpr = gl.BlockedLayout([1], [32], [num_warps], [0])

    q_ring, k_ring, do_ring, bars = _ring(q_desc, k_desc, do_desc, STAGES, BT, K, BV)
    ds_smem = gl.allocate_shared_memory(DT, [K, BV], ds_desc.layout)  # the gradient leaving the chunk
    do_start_smem = gl.allocate_shared_memory(DT, [BT, BV], do_desc.layout)  # scale 2^G do
    dv_smem = gl.allocate_shared_memory(DT, [BT, BV], dv_desc.layout)  # dv, copied out by TMA
    col_v = i_h * V + i_v * BV
    for i in gl.static_range(STAGES - 1):  # step i walks chunk NT - 1 - i
        _issue_step(i, NT, bos, q_desc, k_desc, do_desc, i_h * K, col_v, q_ring, k_ring, do_ring, bars,
                    STAGES, BT, True)

    rows_s, cols_s, rows_o, cols_o, t_g, state_offs = _walk_indices(i_nh, i_v, K, V, BV, BT, s_layout, o_layout,
                                                                    g_layout)
    anticausal = rows_s[:, None] <= cols_s[None, :]
    if HAS_DHT:
        dS = gl.load(dht + state_offs)
    else:
        dS = gl.zeros([K, BV], gl.float32, layout=o_layout)

    t_last = (NT - 1) * BT + t_g
    g_next = gl.load(g + (bos + t_last) * H + i_h, mask=(t_last >= 0) & (t_last < seq_len), other=0.0)
    At_next = _start_scores(0, NT, k_ring, q_ring, bars, STAGES, BT, s_layout)
    for i_r in range(0, NT):
        i_t = NT - 1 - i_r
        slot = i_r % STAGES
        _issue_step(i_r + STAGES - 1, NT, bos, q_desc, k_desc, do_desc, i_h * K, col_v, q_ring, k_ring,
                    do_ring, bars, STAGES, BT, True)
        g_raw = g_next
        t_prev = (i_t - 1) * BT + t_g
        g_next = gl.load(g + (bos + t_prev) * H + i_h, mask=(t_prev >= 0) & (t_prev < seq_len), other=0.0)

        _stage_state(dS, ds_smem, ds_desc, ((c0 + i_t) * H + i_h).to(gl.int32) * K, i_v * BV, True)
        q_t, k_t, do_t = q_ring.index(slot), k_ring.index(slot), do_ring.index(slot)
        kdS = warpgroup_mma(k_t, ds_smem, gl.zeros([BT, BV], gl.float32, layout=o_layout), use_acc=False,
                            is_async=True)
        G_rows, G_cols, G_o, G_last = _chunk_gates(g_raw, s_layout, o_layout)
        At = warpgroup_mma_wait(1, deps=[At_next])
        # columns past the sequence end hold other tokens' queries and output gradients
        keep = anticausal & ((i_t * BT + cols_s) < seq_len)[None, :]
        At = gl.where(keep, At * gl.exp2(G_cols[None, :] - G_rows[:, None]), 0.0) * scale
        Atdo = warpgroup_mma(gl.convert_layout(At.to(DT), a_operand), do_t,
                             gl.zeros([BT, BV], gl.float32, layout=o_layout), use_acc=False, is_async=True)
        valid = (i_t * BT + rows_o) < seq_len
        do_start = do_t.load(o_layout).to(gl.float32) * (gl.exp2(G_o) * scale)[:, None]
        do_start = gl.where(valid[:, None], do_start, 0.0)
        do_start_smem.store(do_start.to(DT))
        fence_async_shared()
        kdS, Atdo = warpgroup_mma_wait(0, deps=[kdS, Atdo])
        dv_t = Atdo + kdS * gl.exp2(G_last - G_o)[:, None]
        _write_out(dv_t, dv_smem, dv_desc, dv, bos + i_t * BT, seq_len - i_t * BT, col_v, rows_o, cols_o, H, V,
                   BT)
        dS = warpgroup_mma(q_t.permute((1, 0)), do_start_smem, dS * gl.exp2(G_last), is_async=True)
        At_next = _start_scores(i_r + 1, NT, k_ring, q_ring, bars, STAGES, BT, s_layout)
        dS = warpgroup_mma_wait(1, deps=[dS])
    _finish(At_next, bars, STAGES)
    gl.store(dh0 + state_offs, dS)
