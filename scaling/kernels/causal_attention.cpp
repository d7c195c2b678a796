// Causal self-attention for training on CPU: fp32, heads of 8 to 32 channels, forward and
// backward. Built on first use by scaling/cpu_attention.py (c++ -O3 -march=native) and
// called through ctypes; see that file for why it exists and when it is used.
//
// Per (batch, head), everything stays in the core's caches: the scores are materialised
// once (T x T, 64 KB at T = 128) and kept as probabilities P for the backward pass, which
// then needs no recomputation. Every product is one of two register-blocked micro-kernels
// over the causal triangle only (blocks of R rows; past-diagonal entries of P are exact
// zeros, so a block may read a little past its diagonal without changing any sum):
//   rows_dot:  C[i, j] = sum_d A[i, d] Bt[d, j]       (S = Q K^T, dP = dO V^T)
//   rows_mix:  Out[i]  = sum_{j<=i} W[i, j] X[j]      (O = P V, dQ = dS K)
//   cols_mix:  Out[j]  = sum_{i>=j} W[i, j] X[i]      (dV = P^T dO, dK = dS^T Q)
// Rotary position embeddings, when given, are applied to q and k as they are gathered, and
// their transpose to dq and dk as they are written, so a training step runs no separate
// rotary kernels. Vectors are GCC/Clang vector extensions of 8 floats (AVX2 or AVX-512).
#include <cstdint>
#include <cstring>
#include <vector>

namespace {

typedef float v8 __attribute__((vector_size(32)));
typedef int32_t vi8 __attribute__((vector_size(32)));

inline v8 ld(const float *p) { v8 r; std::memcpy(&r, p, sizeof r); return r; }
inline void st(float *p, v8 x) { std::memcpy(p, &x, sizeof x); }
inline v8 bc(float x) { return v8{x, x, x, x, x, x, x, x}; }
inline v8 select(vi8 mask, v8 yes, v8 no) {  // mask lanes are all-ones or zero
    return (v8)(((vi8)yes & mask) | ((vi8)no & ~mask));
}
inline float hsum(v8 x) { float s = 0; for (int c = 0; c < 8; c++) s += x[c]; return s; }
inline float hmax(v8 x) { float m = x[0]; for (int c = 1; c < 8; c++) m = x[c] > m ? x[c] : m; return m; }
inline int round8(int x) { return (x + 7) & ~7; }

// exp(x) for x <= 0 (scores after the row maximum is subtracted): Cephes' expf polynomial,
// relative error ~1e-7; inputs below -87 give exp(-87) ~ 1.6e-38 instead of underflowing.
inline v8 vexp(v8 x) {
    x = select(x < bc(-87.0f), bc(-87.0f), x);
    v8 t = x * bc(1.44269504088896341f) + bc(0.5f);
    vi8 n = __builtin_convertvector(t, vi8);
    n += (vi8)(__builtin_convertvector(n, v8) > t);  // truncation -> floor for negative t
    v8 fx = __builtin_convertvector(n, v8);
    x = x - fx * bc(0.693359375f) - fx * bc(-2.12194440e-4f);
    v8 y = bc(1.9875691500E-4f);
    y = y * x + bc(1.3981999507E-3f);
    y = y * x + bc(8.3334519073E-3f);
    y = y * x + bc(4.1665795894E-2f);
    y = y * x + bc(1.6666665459E-1f);
    y = y * x + bc(5.0000001201E-1f);
    y = y * x * x + x + bc(1.0f);
    vi8 e = (n + 127) << 23;
    v8 scale;
    std::memcpy(&scale, &e, sizeof scale);
    return y * scale;
}

// Rows per register block. With AVX-512's 32 vector registers, 8 rows x 3 vectors (heads of
// 24) of accumulators fit; with AVX2's 16, 4 rows. Measured at heads of 24: 8 rows is 15-25%
// faster than 4 where it fits.
#ifdef __AVX512F__
constexpr int kRegs = 32;
#else
constexpr int kRegs = 16;
#endif
template <int D> constexpr int rows_per_block() { return (D / 8) * 8 + 4 <= kRegs ? 8 : 4; }

// C[i, j] = sum_d A[i, d] * Bt[d, j] for i in [i0, i0 + R), j < jend (a multiple of 8).
template <int D, int R>
inline void rows_dot(const float *A, const float *Bt, int TP, int i0, int jend, float *C) {
    int j = 0;
    for (; j + 16 <= jend; j += 16) {
        v8 a0[R] = {}, a1[R] = {};
        for (int d = 0; d < D; d++) {
            v8 b0 = ld(Bt + d * TP + j), b1 = ld(Bt + d * TP + j + 8);
            for (int r = 0; r < R; r++) {
                v8 a = bc(A[(i0 + r) * D + d]);
                a0[r] += a * b0;
                a1[r] += a * b1;
            }
        }
        for (int r = 0; r < R; r++) {
            st(C + (i0 + r) * TP + j, a0[r]);
            st(C + (i0 + r) * TP + j + 8, a1[r]);
        }
    }
    for (; j < jend; j += 8) {
        v8 a0[R] = {};
        for (int d = 0; d < D; d++) {
            v8 b0 = ld(Bt + d * TP + j);
            for (int r = 0; r < R; r++) a0[r] += bc(A[(i0 + r) * D + d]) * b0;
        }
        for (int r = 0; r < R; r++) st(C + (i0 + r) * TP + j, a0[r]);
    }
}

// Out[i, :] = scale * sum_{j < jend} W[i, j] * X[j, :] for i in [i0, i0 + R).
template <int D, int R>
inline void rows_mix(const float *W, int TP, const float *X, int i0, int jend, float *Out,
                     float scale) {
    constexpr int ND = D / 8;
    v8 acc[R][ND] = {};
    for (int j = 0; j < jend; j++) {
        v8 x[ND];
        for (int c = 0; c < ND; c++) x[c] = ld(X + j * D + c * 8);
        // Keeps x in registers: without it the compiler folds a load of x into every
        // multiply-add, and the loop is bound by loads (measured 13% slower).
        asm volatile("" ::: "memory");
        for (int r = 0; r < R; r++) {
            v8 w = bc(W[(i0 + r) * TP + j]);
            for (int c = 0; c < ND; c++) acc[r][c] += w * x[c];
        }
    }
    for (int r = 0; r < R; r++)
        for (int c = 0; c < ND; c++) st(Out + (i0 + r) * D + c * 8, acc[r][c] * bc(scale));
}

// Out[j, :] = sum_{i >= j0} W[i, j] * X[i, :] for j in [j0, j0 + R).
template <int D, int R>
inline void cols_mix(const float *W, int TP, const float *X, int T, int j0, float *Out) {
    constexpr int ND = D / 8;
    v8 acc[R][ND] = {};
    for (int i = j0; i < T; i++) {
        v8 x[ND];
        for (int c = 0; c < ND; c++) x[c] = ld(X + i * D + c * 8);
        asm volatile("" ::: "memory");  // as in rows_mix
        for (int r = 0; r < R; r++) {
            v8 w = bc(W[i * TP + j0 + r]);
            for (int c = 0; c < ND; c++) acc[r][c] += w * x[c];
        }
    }
    for (int r = 0; r < R; r++)
        for (int c = 0; c < ND; c++) st(Out + (j0 + r) * D + c * 8, acc[r][c]);
}

// Scores row[0 .. i] -> softmax probabilities, row(i .. jend) -> exact zeros. The chunk of 8
// holding the diagonal is the last one (jend = the end of i's row block, rounded up to 8).
inline void softmax_row(float *row, int i, int jend) {
    const v8 lane = {0, 1, 2, 3, 4, 5, 6, 7};
    const int last = jend - 8;
    const vi8 keep = (lane + bc((float)last)) <= bc((float)i);
    v8 tail = select(keep, ld(row + last), bc(-1e30f));
    st(row + last, tail);
    v8 m = tail;
    for (int j = 0; j < last; j += 8) {
        v8 x = ld(row + j);
        m = select(x > m, x, m);
    }
    const v8 mx = bc(hmax(m));
    v8 sum = bc(0.f);
    for (int j = 0; j < last; j += 8) {
        v8 e = vexp(ld(row + j) - mx);
        st(row + j, e);
        sum += e;
    }
    tail = select(keep, vexp(tail - mx), bc(0.f));
    st(row + last, tail);
    const v8 inv = bc(1.0f / hsum(sum + tail));
    for (int j = 0; j < jend; j += 8) st(row + j, ld(row + j) * inv);
}

// Element (b, h, t, d) of a (B, H, T, D) tensor with unit stride in d.
struct View {
    const float *p;
    int64_t sb, sh, st;
    const float *row(int b, int h, int t) const { return p + b * sb + h * sh + t * st; }
};
struct OutView {
    float *p;
    int64_t sb, sh, st;
    float *row(int b, int h, int t) const { return p + b * sb + h * sh + t * st; }
};

// Rotary tables (T, D): cos, and sin signed -sin for the first half of a head and +sin for
// the second (GPT-NeoX's half-split layout, as scaling/model.py). x' = x cos + swap(x) sin,
// where swap exchanges the halves; the transpose is dx = dx' cos - swap(dx') sin.
struct Rotary {
    const float *cos, *sin;  // null: no rotary
};

// out[d] = scale * (x rotated at position t)[d]; sign -1 applies the transpose instead.
template <int D>
inline void rotate(const float *x, Rotary rot, int t, float sign, float scale, float *out) {
    if (!rot.cos) {
        for (int d = 0; d < D; d++) out[d] = x[d] * scale;
        return;
    }
    const float *c = rot.cos + t * D, *sn = rot.sin + t * D;
    constexpr int half = D / 2;  // two branch-free loops the compiler vectorises
    for (int d = 0; d < half; d++) out[d] = (x[d] * c[d] + sign * x[d + half] * sn[d]) * scale;
    for (int d = half; d < D; d++) out[d] = (x[d] * c[d] + sign * x[d - half] * sn[d]) * scale;
}

template <int D>
void forward_one(int b, int h, int T, View q, View k, View v, Rotary rot, OutView o, float *P) {
    constexpr int R = rows_per_block<D>();
    const int TP = round8(T);
    const float scale = 1.0f / __builtin_sqrtf((float)D);
    std::vector<float> Qs(T * D), Kt(D * TP, 0.f), V(T * D), O(T * D);
    float kr[D];
    for (int t = 0; t < T; t++) {
        rotate<D>(q.row(b, h, t), rot, t, 1.f, scale, Qs.data() + t * D);
        rotate<D>(k.row(b, h, t), rot, t, 1.f, 1.f, kr);
        const float *vr = v.row(b, h, t);
        for (int d = 0; d < D; d++) {
            Kt[d * TP + t] = kr[d];
            V[t * D + d] = vr[d];
        }
    }
    for (int i0 = 0; i0 < T; i0 += R) {
        const int jend = round8(i0 + R);
        rows_dot<D, R>(Qs.data(), Kt.data(), TP, i0, jend, P);
        for (int r = 0; r < R; r++) softmax_row(P + (i0 + r) * TP, i0 + r, jend);
        rows_mix<D, R>(P, TP, V.data(), i0, i0 + R, O.data(), 1.0f);
    }
    for (int t = 0; t < T; t++) std::memcpy(o.row(b, h, t), O.data() + t * D, D * sizeof(float));
}

template <int D>
void backward_one(int b, int h, int T, View q, View k, View v, Rotary rot, View o, View g,
                  const float *P, OutView dq, OutView dk, OutView dv, float *dS) {
    constexpr int R = rows_per_block<D>();
    const int TP = round8(T);
    const float scale = 1.0f / __builtin_sqrtf((float)D);
    std::vector<float> Qs(T * D), K(T * D), Vt(D * TP, 0.f), G(T * D), delta(T), dQ(T * D),
        dK(T * D), dV(T * D);
    for (int t = 0; t < T; t++) {
        rotate<D>(q.row(b, h, t), rot, t, 1.f, scale, Qs.data() + t * D);
        rotate<D>(k.row(b, h, t), rot, t, 1.f, 1.f, K.data() + t * D);
        const float *vr = v.row(b, h, t), *orow = o.row(b, h, t), *gr = g.row(b, h, t);
        float dot = 0;  // delta_t = dO_t . O_t = sum_j P_tj dP_tj, the softmax backward's row term
        for (int d = 0; d < D; d++) {
            Vt[d * TP + t] = vr[d];
            G[t * D + d] = gr[d];
            dot += gr[d] * orow[d];
        }
        delta[t] = dot;
    }
    for (int j0 = 0; j0 < T; j0 += R) cols_mix<D, R>(P, TP, G.data(), T, j0, dV.data());
    for (int i0 = 0; i0 < T; i0 += R) {
        const int jend = round8(i0 + R);
        rows_dot<D, R>(G.data(), Vt.data(), TP, i0, jend, dS);  // dP = dO V^T
        for (int i = i0; i < i0 + R; i++) {  // dS = P * (dP - delta), zero past the diagonal
            float *row = dS + i * TP;
            const float *pr = P + i * TP;
            const v8 dl = bc(delta[i]);
            for (int j = 0; j < jend; j += 8) st(row + j, ld(pr + j) * (ld(row + j) - dl));
        }
        rows_mix<D, R>(dS, TP, K.data(), i0, i0 + R, dQ.data(), scale);
    }
    // S = (Q scale) K^T: dK = dS^T (Q scale), dQ = scale dS K (above).
    for (int j0 = 0; j0 < T; j0 += R) cols_mix<D, R>(dS, TP, Qs.data(), T, j0, dK.data());
    for (int t = 0; t < T; t++) {  // gradients of the unrotated q and k
        rotate<D>(dQ.data() + t * D, rot, t, -1.f, 1.f, dq.row(b, h, t));
        rotate<D>(dK.data() + t * D, rot, t, -1.f, 1.f, dk.row(b, h, t));
        std::memcpy(dv.row(b, h, t), dV.data() + t * D, D * sizeof(float));
    }
}

View view(const float *p, const int64_t *s) { return View{p, s[0], s[1], s[2]}; }
OutView out_view(float *p, const int64_t *s) { return OutView{p, s[0], s[1], s[2]}; }

}  // namespace

extern "C" {

// Head dims the kernels are built for; T must be a multiple of 8.
int causal_attention_supports(int T, int D) {
    return T > 0 && T % 8 == 0 && (D == 8 || D == 16 || D == 24 || D == 32);
}

// Heads bh0 .. bh1 - 1 (bh = b * H + h) of O = softmax(Q K^T / sqrt(D), causal) V.
// q, k, v, o: (B, H, T, D) with strides (b, h, t) given, unit stride in d. cos, sin: (T, D)
// rotary tables applied to q and k, or both null. P: (B * H, T, round8(T)) probabilities,
// kept for the backward pass. Returns 0 on success.
int causal_attention_forward(int bh0, int bh1, int H, int T, int D,
                             const float *q, const int64_t *qs, const float *k,
                             const int64_t *ks, const float *v, const int64_t *vs,
                             const float *cos, const float *sin,
                             float *o, const int64_t *os, float *P) {
    if (!causal_attention_supports(T, D)) return 1;
    const int64_t per_head = (int64_t)T * round8(T);
    for (int bh = bh0; bh < bh1; bh++) {
        const int b = bh / H, h = bh % H;
        float *Pb = P + bh * per_head;
        View Q = view(q, qs), K = view(k, ks), V = view(v, vs);
        OutView O = out_view(o, os);
        const Rotary rot{cos, sin};
        switch (D) {
            case 8: forward_one<8>(b, h, T, Q, K, V, rot, O, Pb); break;
            case 16: forward_one<16>(b, h, T, Q, K, V, rot, O, Pb); break;
            case 24: forward_one<24>(b, h, T, Q, K, V, rot, O, Pb); break;
            case 32: forward_one<32>(b, h, T, Q, K, V, rot, O, Pb); break;
        }
    }
    return 0;
}

// Gradients dq, dk, dv (of q and k before rotation) of heads bh0 .. bh1 - 1 given
// g = dL/dO, the forward's output o and P.
int causal_attention_backward(int bh0, int bh1, int H, int T, int D,
                              const float *q, const int64_t *qs, const float *k,
                              const int64_t *ks, const float *v, const int64_t *vs,
                              const float *cos, const float *sin, const float *o, const int64_t *os, const float *g,
                              const int64_t *gs, const float *P, float *dq, const int64_t *dqs,
                              float *dk, const int64_t *dks, float *dv, const int64_t *dvs) {
    if (!causal_attention_supports(T, D)) return 1;
    const int64_t per_head = (int64_t)T * round8(T);
    std::vector<float> dS(per_head);
    for (int bh = bh0; bh < bh1; bh++) {
        const int b = bh / H, h = bh % H;
        const float *Pb = P + bh * per_head;
        View Q = view(q, qs), K = view(k, ks), V = view(v, vs), O = view(o, os), G = view(g, gs);
        OutView DQ = out_view(dq, dqs), DK = out_view(dk, dks), DV = out_view(dv, dvs);
        const Rotary rot{cos, sin};
        float *s = dS.data();
        switch (D) {
            case 8: backward_one<8>(b, h, T, Q, K, V, rot, O, G, Pb, DQ, DK, DV, s); break;
            case 16: backward_one<16>(b, h, T, Q, K, V, rot, O, G, Pb, DQ, DK, DV, s); break;
            case 24: backward_one<24>(b, h, T, Q, K, V, rot, O, G, Pb, DQ, DK, DV, s); break;
            case 32: backward_one<32>(b, h, T, Q, K, V, rot, O, G, Pb, DQ, DK, DV, s); break;
        }
    }
    return 0;
}

}  // extern "C"
