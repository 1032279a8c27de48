// The tiled (prepacked) W4A16 layout, version 1: where every 4-bit code and every scale /
// zero point of a [N, K] weight sits in the buffer that gatednorm_w4a16_prepack writes.
// Plain C++ (__host__ __device__), shared by the CPU backend (which packs on the host and
// reads the layout back in its GEMM: the layout's own test), the GPU prepack kernel and the
// GPU GEMM kernels.  docs/w4a16.md ("Tiled layout") draws it.
//
// Geometry: N padded to Np (a multiple of 16), K to Kp (a multiple of 64).  The weight is cut
// into tiles of 16 columns x 64 k ("col tile" nt, "k chunk" kc); a tile is 512 contiguous
// bytes, tiles of one col tile follow each other along K:
//     tile (nt, kc) at byte (nt * KC + kc) * 512,   KC = Kp / 64.
// Inside a tile, lane L = 4 g + t (g = 0..7, t = 0..3: an NVIDIA mma.sync thread's groupID and
// thread-in-group) owns the 16 bytes at L * 16: columns g and g + 8 of the tile, k = 16 t ..
// 16 t + 15.  Its word j (bytes 4 j .. 4 j + 3, little endian) holds k = 16 t + 4 j + s,
// s = 0..3, at nibble position p = h + 4 (s & 1) + 2 (s >> 1) (bits 4p..4p+3), h = 0 for
// column g, 1 for column g + 8:
//     positions 0, 4 | 2, 6 : column g,     s = 0, 1 | 2, 3
//     positions 1, 5 | 3, 7 : column g + 8, s = 0, 1 | 2, 3
// so (word >> {0, 4, 8, 12}) & 0x000f000f puts two codes of one column and consecutive k in
// the two 16-bit halves: exactly the four A-operand registers of mma.m16n8k16 (rows = the 16
// columns, k permuted inside the chunk: the activations are read with the same permutation).
//
// Scales and zero points follow the weights (byte weight_bytes on): per (col tile nt, group
// gi), 8 entries, one per g; entry = uint16 {s[g], s[g + 8]} (symmetric) or {s[g], s[g + 8],
// zb[g], zb[g + 8]} (asymmetric), s in the activations' 16-bit dtype (RNE from the plain
// scales), zb = int4_magic_base(dt) | z.  A thread loads its whole group's scale and zero
// point pair in one 4- or 8-byte access:
//     entry (nt, gi, g) at weight_bytes + ((nt * NG + gi) * 8 + g) * entry_bytes.
// The group of k is k >> gshift: log2(G) for a power-of-two G, 31 for per-channel (G = K not
// a power of two: every k is in group 0).  Padding (n >= N or k >= K) holds code 8, zero
// point 8 and scale 0 (a padded k of a real group, per-channel only, holds that group's zero
// point): every padded weight dequantizes to exactly 0.
#pragma once
#include "numerics.h"

namespace gn {

constexpr int kW4TileN = 16;
constexpr int kW4TileK = 64;
constexpr int kW4TileBytes = 512;
constexpr int kW4LayoutVersion = 1;

struct W4Tiled {
    int64_t n = 0, k = 0, group = 0;  // logical N, K, G
    int64_t np = 0, kp = 0;           // padded
    int64_t ntiles = 0, kchunks = 0;  // Np / 16, Kp / 64
    int64_t ngroups = 0;              // groups stored per col tile (padding groups included)
    int gshift = 0;
    int entry_bytes = 0;              // 4 (symmetric) or 8
    int64_t weight_bytes = 0, scale_bytes = 0, total_bytes = 0;
};

GN_HD bool w4_is_pow2(int64_t v) { return v > 0 && (v & (v - 1)) == 0; }

// The tiled geometry of an [N, K] weight with group G (G = K: per-channel); false when the
// layout cannot hold it (G neither a power of two >= 16 nor K; K odd; N, K < 1 or >= 2^31).
GN_HD bool w4_tiled_geometry(int64_t n, int64_t k, int64_t group, bool symmetric, W4Tiled *t) {
    if (n < 1 || k < 2 || (k & 1) || n >= (int64_t(1) << 31) || k >= (int64_t(1) << 31)) return false;
    if (group < 1 || k % group) return false;
    int shift = 0;
    if (w4_is_pow2(group) && group >= 16) {
        while ((int64_t(1) << shift) < group) ++shift;
    } else if (group == k) {
        shift = 31;
    } else {
        return false;
    }
    t->n = n;
    t->k = k;
    t->group = group;
    t->np = (n + kW4TileN - 1) / kW4TileN * kW4TileN;
    t->kp = (k + kW4TileK - 1) / kW4TileK * kW4TileK;
    t->ntiles = t->np / kW4TileN;
    t->kchunks = t->kp / kW4TileK;
    t->gshift = shift;
    t->ngroups = shift == 31 ? 1 : (t->kp + group - 1) / group;
    t->entry_bytes = symmetric ? 4 : 8;
    t->weight_bytes = t->ntiles * t->kchunks * kW4TileBytes;
    t->scale_bytes = t->ntiles * t->ngroups * 8 * t->entry_bytes;
    t->total_bytes = t->weight_bytes + t->scale_bytes;
    return true;
}

// Nibble position of (column half h, s) inside a lane's word.
GN_HD int w4_nibble_pos(int h, int s) { return h + 4 * (s & 1) + 2 * (s >> 1); }

// Byte offset and bit shift of the code of (n, k) (padded coordinates allowed).
GN_HD int64_t w4_code_offset(const W4Tiled &t, int64_t n, int64_t k, int *shift) {
    const int64_t nt = n / kW4TileN, kc = k / kW4TileK;
    const int nl = int(n % kW4TileN), kl = int(k % kW4TileK);
    const int g = nl & 7, h = nl >> 3, tt = kl >> 4, j = (kl >> 2) & 3, s = kl & 3;
    const int p = w4_nibble_pos(h, s);
    *shift = (p & 1) * 4;
    return (nt * t.kchunks + kc) * kW4TileBytes + (4 * g + tt) * 16 + j * 4 + (p >> 1);
}

// Byte offset of the scale entry of (n, group gi); the scale is at +2h, the zero point at +4+2h.
GN_HD int64_t w4_entry_offset(const W4Tiled &t, int64_t n, int64_t gi) {
    const int64_t nt = n / kW4TileN;
    const int g = int(n % kW4TileN) & 7;
    return t.weight_bytes + ((nt * t.ngroups + gi) * 8 + g) * t.entry_bytes;
}

GN_HD int64_t w4_group_of(const W4Tiled &t, int64_t k) { return t.gshift == 31 ? 0 : k >> t.gshift; }

// ---- reading the plain layout (docs/w4a16.md "Plain"): what prepack and the CPU GEMM see.
struct W4Plain {
    const uint8_t *q = nullptr;      // [N, K/2] codes, row stride q_sn bytes
    int64_t q_sn = 0;
    const char *s = nullptr;         // [N, K/G] scales of dtype s_dt (gn::Dtype), strides in elements
    int s_dt = 0;
    int64_t s_sn = 0, s_sg = 0;
    const uint8_t *z = nullptr;      // [N, K/G] zero-point codes (low nibble), or null: 8
    int64_t z_sn = 0, z_sg = 0;
    int64_t n = 0, k = 0, group = 0;
};

GN_HD int w4_plain_code(const W4Plain &w, int64_t n, int64_t k) { return int4_code(w.q + n * w.q_sn, k); }
GN_HD float w4_plain_scale(const W4Plain &w, int64_t n, int64_t gi) {
    return load_as_f32(w.s + (n * w.s_sn + gi * w.s_sg) * dtype_size(w.s_dt), w.s_dt);
}
GN_HD int w4_plain_zero(const W4Plain &w, int64_t n, int64_t gi) { return w.z ? (w.z[n * w.z_sn + gi * w.z_sg] & 0xf) : 8; }

// The 16 bytes of lane `lane` of tile (nt, kc), as four little-endian words.
GN_HD void w4_pack_lane(const W4Plain &w, const W4Tiled &t, int64_t nt, int64_t kc, int lane, uint32_t out[4]) {
    const int g = lane >> 2, tt = lane & 3;
    for (int j = 0; j < 4; ++j) {
        uint32_t word = 0;
        for (int h = 0; h < 2; ++h) {
            const int64_t n = nt * kW4TileN + g + 8 * h;
            for (int s = 0; s < 4; ++s) {
                const int64_t k = kc * kW4TileK + 16 * tt + 4 * j + s;
                int code = 8;  // padding: q - z = 0 (zero point 8 where the group is padding)
                if (n < w.n && k < w.k) code = w4_plain_code(w, n, k);
                else if (n < w.n && w4_group_of(t, k) < w.k / w.group) code = w4_plain_zero(w, n, w4_group_of(t, k));
                word |= uint32_t(code) << (4 * w4_nibble_pos(h, s));
            }
        }
        out[j] = word;
    }
}

// The scale entry (nt, gi, g) as uint16 values: {s_g, s_g8} or {s_g, s_g8, zb_g, zb_g8}.
GN_HD void w4_pack_entry(const W4Plain &w, const W4Tiled &t, int64_t nt, int64_t gi, int g, int dt, uint16_t out[4]) {
    const int64_t ngroups_real = w.k / w.group;
    for (int h = 0; h < 2; ++h) {
        const int64_t n = nt * kW4TileN + g + 8 * h;
        const bool real = n < w.n && gi < ngroups_real;
        out[h] = real ? w4a16_scale_bits(w4_plain_scale(w, n, gi), dt) : uint16_t(0);
        out[2 + h] = uint16_t(int4_magic_base(dt) | (real ? w4_plain_zero(w, n, gi) : 8));
    }
    (void)t;
}

}  // namespace gn
