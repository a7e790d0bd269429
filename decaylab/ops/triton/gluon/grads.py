"""Scalar-decay dq, dk and gate gradient for Hopper (sm_90) in Gluon: chunk_parallel.chunk_dqk_kernel's work (same
formulas, see there) for one stored state per 64-token chunk, planned to keep the memory system busy.

chunk_dqk_kernel runs one program per (chunk, head, key block): it issues its loads, waits for them, computes and
stores, and only the SM's other program overlaps that wait. Here persistent programs, two per SM, walk the items
(chunk, head, key block of 64) and copy each item's inputs by TMA ahead of their use:

- the values, output gradients, states and state gradients in pieces of 64 value channels, RING pieces in flight:
  while an item's products run, the next pieces arrive;
- the queries and keys an item ahead (an item reads them only after its value pieces).

dq and dk leave by TMA copies too, staged in buffers the item has finished reading (its decayed scores' and its
keys'); a sequence's short last chunk by masked stores. The two key blocks of K = 128 add their gate-gradient shares
in place (two addends onto zeros: the same sum whichever lands first).

Products on wgmma, one warpgroup per program (four warps, up to 255 registers each: two programs fill the SM's
registers and shared memory). The chunk bounds (first token, length) of the items up to three on and the next item's
gates are loaded an item early, so no copy waits on a scalar load.

Rows past a chunk's end (a sequence's last chunk may be short) hold the next sequence's tokens or zeros: the
decayed scores are zeroed on those rows (every kept column lies before a kept row), the gate carry's key terms are
masked, and the stores skip them.
"""

from decaylab.ops.triton.gluon.language import add, cta_barrier, fence_async_shared, gl, gluon, log2_cumsum, \
    mbarrier, mma_layout, tma, tma_load, tma_store, warpgroup_mma, warpgroup_mma_wait


@gluon.jit
def _bounds_of(j, mine, first_item, step, chunk_bos, chunk_end, H: gl.constexpr, NK: gl.constexpr):
    """First token and length of the chunk of this program's item j (0, 0 past its last item)."""
    i_c = (first_item + j * step) // (H * NK)
    bos = gl.load(chunk_bos + i_c, mask=j < mine, other=0)
    return bos.to(gl.int32), (gl.load(chunk_end + i_c, mask=j < mine, other=0) - bos).to(gl.int32)


@gluon.jit
def _pick(ahead, row, row1, row2):
    """The first token of the chunk ``ahead`` (0, 1 or 2) items on."""
    if ahead == 0:
        picked = row
    elif ahead == 1:
        picked = row1
    else:
        picked = row2
    return picked


@gluon.jit
def _issue_piece(n, pieces, row, first_item, step, v_desc, do_desc, h_desc, dh_desc, v_ring, do_ring,
                 h_ring, dh_ring, bars, H: gl.constexpr, K: gl.constexpr, V: gl.constexpr,
                 BT: gl.constexpr, RING: gl.constexpr):
    """The TMA copies of this program's value piece n (item n // NV, whose chunk starts at token ``row``;
    value channels (n % NV) * 64 on) into ring slot n % RING: values, output gradients, the state block
    and its gradient; none past the program's last piece."""
    NV: gl.constexpr = V // BT
    NK: gl.constexpr = K // BT
    if n < pieces:
        item = first_item + (n // NV) * step
        i_c = item // (H * NK)
        i_h = (item // NK) % H
        col = i_h * V + (n % NV) * BT
        state_row = ((i_c * H + i_h) * K + (item % NK) * BT).to(gl.int32)
        slot = n % RING
        bar = bars.index(slot)
        mbarrier.expect(bar, 2 * v_desc.block_type.nbytes + 2 * h_desc.block_type.nbytes)
        tma_load(v_desc, [row, col], bar, v_ring.index(slot))
        tma_load(do_desc, [row, col], bar, do_ring.index(slot))
        tma_load(h_desc, [state_row, (n % NV) * BT], bar, h_ring.index(slot))
        tma_load(dh_desc, [state_row, (n % NV) * BT], bar, dh_ring.index(slot))


@gluon.jit
def _issue_keys(j, mine, row, first_item, step, q_desc, k_desc, qk, bar, H: gl.constexpr,
                K: gl.constexpr, BT: gl.constexpr):
    """The TMA copies of item j's queries and keys (its key block) into buffer j % 2 of qk."""
    NK: gl.constexpr = K // BT
    if j < mine:
        item = first_item + j * step
        col = ((item // NK) % H) * K + (item % NK) * BT
        mbarrier.expect(bar, 2 * q_desc.block_type.nbytes)
        tma_load(q_desc, [row, col], bar, qk.index(2 * (j % 2)))
        tma_load(k_desc, [row, col], bar, qk.index(2 * (j % 2) + 1))


@gluon.jit
def _gates(g, row, chunk_len, i_h, t_g, H: gl.constexpr):
    """The raw log decays of a chunk (0 past its end)."""
    return gl.load(g + (row + t_g).to(gl.int64) * H + i_h, mask=t_g < chunk_len, other=0.0)


@gluon.jit
def _store_rows(x, ptr, row, chunk_len, col, H: gl.constexpr, D: gl.constexpr, BT: gl.constexpr,
                out_layout: gl.constexpr):
    """The rows before the chunk's end of a [64, 64] result, at column col, in 16-byte pieces of whole rows
    (the wgmma layout would write 4 bytes at a time): a short chunk's, which a TMA copy of the whole tile
    would write past."""
    x = gl.convert_layout(x.to(ptr.dtype.element_ty), out_layout)
    rows = gl.arange(0, BT, layout=gl.SliceLayout(1, out_layout))
    cols = gl.arange(0, BT, layout=gl.SliceLayout(0, out_layout))
    offs = (row + rows).to(gl.int64)[:, None] * (H * D) + col + cols[None, :]
    gl.store(ptr + offs, x, mask=(rows < chunk_len)[:, None])


@gluon.jit
def hopper_dqk_kernel(q_desc, k_desc, v_desc, do_desc, h_desc, dh_desc, dq_desc, dk_desc, g, dq, dk, dg,
                      chunk_bos, chunk_end, scale, items, H: gl.constexpr, K: gl.constexpr, V: gl.constexpr,
                      BT: gl.constexpr, RING: gl.constexpr, num_warps: gl.constexpr):
    """Items (chunk, head, key block of 64) = program_id, + num_programs, ...:
        dq_t = scale 2^G_t (do_t h^T) + sum_{s < t} dA_ts 2^(G_t - G_s) k_s + dA_tt k_t
        dk_s = 2^(G_L - G_s) (v_s dh^T) + sum_{t > s} dA_ts 2^(G_t - G_s) q_t + dA_ss q_s
    with dA = scale do v^T, G the chunk's cumulative log2 decay (G_L at its end), h entering and dh leaving
    it; dg gets this key block's share of the suffix sums of q.dq - k.dk plus sum(S_end * dh), S_end the
    state leaving the chunk (added: two key blocks' shares onto zeros give one sum, whichever lands first)."""
    NV: gl.constexpr = V // BT
    NK: gl.constexpr = K // BT
    DT: gl.constexpr = q_desc.dtype
    acc: gl.constexpr = mma_layout(BT, num_warps)
    g_layout: gl.constexpr = gl.BlockedLayout([1], [32], [num_warps], [0])
    out_layout: gl.constexpr = gl.BlockedLayout([1, 8], [4, 8], [num_warps, 1], [1, 0])
    first_item = gl.program_id(0)
    step = gl.num_programs(0)
    mine = gl.cdiv(items - first_item, step)
    pieces = mine * NV

    v_ring = gl.allocate_shared_memory(DT, [RING, BT, BT], v_desc.layout)
    do_ring = gl.allocate_shared_memory(DT, [RING, BT, BT], do_desc.layout)
    h_ring = gl.allocate_shared_memory(DT, [RING, BT, BT], h_desc.layout)
    dh_ring = gl.allocate_shared_memory(DT, [RING, BT, BT], dh_desc.layout)
    qk = gl.allocate_shared_memory(DT, [4, BT, BT], q_desc.layout)  # q, k of items j and j + 1
    dAD = gl.allocate_shared_memory(DT, [BT, BT], q_desc.layout)  # the decayed scores
    bars = gl.allocate_shared_memory(gl.int64, [RING, 1], mbarrier.MBarrierLayout())
    qk_bars = gl.allocate_shared_memory(gl.int64, [2, 1], mbarrier.MBarrierLayout())
    for i in gl.static_range(RING):
        mbarrier.init(bars.index(i), count=1)
    for i in gl.static_range(2):
        mbarrier.init(qk_bars.index(i), count=1)
    # chunks of items j, j + 1 and j + 2: a piece in flight belongs to one of them (RING <= 2 NV)
    row, chunk_len = _bounds_of(0, mine, first_item, step, chunk_bos, chunk_end, H, NK)
    row1, len1 = _bounds_of(1, mine, first_item, step, chunk_bos, chunk_end, H, NK)
    row2, len2 = _bounds_of(2, mine, first_item, step, chunk_bos, chunk_end, H, NK)
    for i in gl.static_range(RING):
        _issue_piece(i, pieces, _pick(i // NV, row, row1, row2), first_item, step, v_desc, do_desc, h_desc,
                     dh_desc, v_ring, do_ring, h_ring, dh_ring, bars, H, K, V, BT, RING)
    _issue_keys(0, mine, row, first_item, step, q_desc, k_desc, qk, qk_bars.index(0), H, K, BT)

    rows = gl.arange(0, BT, layout=gl.SliceLayout(1, acc))
    cols = gl.arange(0, BT, layout=gl.SliceLayout(0, acc))
    t_g = gl.arange(0, BT, layout=g_layout)
    zero = gl.zeros([BT, BT], gl.float32, layout=acc)
    g_t = _gates(g, row, chunk_len, (first_item // NK) % H, t_g, H)
    n = 0
    for j in range(0, mine):
        item = first_item + j * step
        i_h = (item // NK) % H
        i_k = item % NK
        # loaded an item ahead of their use: the chunk three items on, the next item's gates
        row3, len3 = _bounds_of(j + 3, mine, first_item, step, chunk_bos, chunk_end, H, NK)
        g_next = _gates(g, row1, len1, ((item + step) // NK) % H, t_g, H)
        dA, P, Q = zero, zero, zero
        h_dh = gl.zeros([BT], gl.float32, layout=gl.SliceLayout(1, acc))  # rows of sum(h * dh)
        for p in range(0, NV):
            slot = n % RING
            mbarrier.wait(bars.index(slot), (n // RING) & 1)
            v_t, do_t = v_ring.index(slot), do_ring.index(slot)
            dA = warpgroup_mma(do_t, v_t.permute((1, 0)), dA, is_async=True)
            P = warpgroup_mma(do_t, h_ring.index(slot).permute((1, 0)), P, is_async=True)
            Q = warpgroup_mma(v_t, dh_ring.index(slot).permute((1, 0)), Q, is_async=True)
            h_dh += gl.sum(h_ring.index(slot).load(acc).to(gl.float32)
                           * dh_ring.index(slot).load(acc).to(gl.float32), axis=1)
            dA, P, Q = warpgroup_mma_wait(0, deps=[dA, P, Q])
            cta_barrier()  # every warp is done with the slot before it is refilled
            _issue_piece(n + RING, pieces, _pick((p + RING) // NV, row, row1, row2), first_item, step,
                         v_desc, do_desc, h_desc, dh_desc, v_ring, do_ring, h_ring, dh_ring, bars, H, K, V,
                         BT, RING)
            n += 1

        G, G_L = log2_cumsum(g_t)
        G_rows = gl.convert_layout(G, gl.SliceLayout(1, acc))
        G_cols = gl.convert_layout(G, gl.SliceLayout(0, acc))
        keep = rows < chunk_len
        dA = dA * scale
        diag = gl.sum(gl.where(rows[:, None] == cols[None, :], dA, 0.0), axis=1)
        # strictly causal, decayed; zero on rows past the chunk's end (and so on every column past it)
        dA = gl.where(keep[:, None] & (rows[:, None] > cols[None, :]),
                      dA * gl.exp2(G_rows[:, None] - G_cols[None, :]), 0.0)
        # item j - 1's results are copied out of dAD and its key buffer: done before they are overwritten
        tma.store_wait(0)
        _issue_keys(j + 1, mine, row1, first_item, step, q_desc, k_desc, qk, qk_bars.index((j + 1) % 2), H, K,
                    BT)
        dAD.store(dA.to(DT))
        fence_async_shared()
        cta_barrier()
        Q = Q * gl.exp2(G_L - G_rows)[:, None]  # dk through the state gradient
        mbarrier.wait(qk_bars.index(j % 2), (j // 2) & 1)
        q_s, k_s = qk.index(2 * (j % 2)), qk.index(2 * (j % 2) + 1)
        kt = k_s.load(acc).to(gl.float32)
        # the gate's carry sum(S_end * dh), S_end = 2^G_L h + sum_s 2^(G_L - G_s) k_s v_s^T
        carry = gl.sum(h_dh * gl.exp2(G_L) + gl.sum(gl.where(keep[:, None], kt * Q, 0.0), axis=1), axis=0)
        dq_t = warpgroup_mma(dAD, k_s, P * (gl.exp2(G_rows) * scale)[:, None], is_async=True)
        dk_t = warpgroup_mma(dAD.permute((1, 0)), q_s, Q, is_async=True)
        dq_t, dk_t = warpgroup_mma_wait(0, deps=[dq_t, dk_t])
        qt = q_s.load(acc).to(gl.float32)
        # the diagonal's terms cancel exactly in q.dq - k.dk: kept out of the gate gradient
        db = gl.sum(qt * dq_t - kt * dk_t, axis=1)
        dq_t += diag[:, None] * kt
        dk_t += diag[:, None] * qt
        col = i_h * K + i_k * BT
        if chunk_len == BT:  # copied out by TMA from dAD and the key buffer, both read already
            cta_barrier()
            dAD.store(dq_t.to(DT))
            k_s.store(dk_t.to(DT))
            fence_async_shared()
            cta_barrier()
            tma_store(dq_desc, [row, col], dAD)
            tma_store(dk_desc, [row, col], k_s)
        else:
            _store_rows(dq_t, dq, row, chunk_len, col, H, K, BT, out_layout)
            _store_rows(dk_t, dk, row, chunk_len, col, H, K, BT, out_layout)
        db = gl.convert_layout(gl.where(keep, db, 0.0), g_layout)
        suffix = gl.sum(db, axis=0) - gl.associative_scan(db, 0, add) + db + carry
        gate = dg + i_h + (row + t_g).to(gl.int64) * H
        if NK == 1:
            gl.store(gate, suffix, mask=t_g < chunk_len)
        else:
            gl.atomic_add(gate, suffix, mask=t_g < chunk_len, sem="relaxed")
        row, chunk_len, row1, len1, row2, len2 = row1, len1, row2, len2, row3, len3
        g_t = g_next
    tma.store_wait(0)
    for i in gl.static_range(RING):
        mbarrier.invalidate(bars.index(i))
    for i in gl.static_range(2):
        mbarrier.invalidate(qk_bars.index(i))
