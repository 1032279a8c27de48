// CPU backend of the fused all-reduce + add-RMSNorm (ops.md §5, docs/allreduce.md): the same
// flag protocol as the GPU kernel, over host memory that the ranks share (POSIX shared memory
// between processes, or one address space), with acquire / release atomics.  The CPU is one
// block: it owns every token.
//   e = own ready flag + 1; copy the partial into own slot e % 2; ready = e (release);
//   wait until every peer's ready >= e (acquire);
//   one-shot: sum the W slots in rank order in fp32 over every column, round to x's dtype, into
//     this rank's reduced region;
//   two-shot: the same sum over this rank's share of the columns only (comm_share_begin), into
//     the same place of its reduced region; gathered = e (release); wait until every peer's
//     gathered >= e (acquire); copy each peer's share from its reduced region into this one's;
//   then add_rmsnorm on the reduced region.
// Two slots suffice: a rank writes slot e % 2 only after every peer's flag reached e - 1,
// i.e. after every peer began call e - 1 and so finished reading the slots of call e - 2.
// The reduced region is reused safely for the same reason one step on: a rank writes it in
// call e only after every peer's ready reached e, i.e. every peer began call e and so finished
// call e - 1, including its two-shot reads of this rank's region.  Within a two-shot call this
// rank writes only the peers' share columns of its own region while the peers read only its
// share columns of it: disjoint bytes.  Each element is still summed by exactly one rank, in
// rank order, with the one-shot arithmetic, so both algorithms give the same bits.
// Out of step: before its ready flag each rank writes its call's signature (the comm's count
// of calls made, refused ones too, the tokens, hidden, dtype, algorithm and a hash of the
// options that change the result: options_hash) into signature
// slot e % 2 of its header, and after the acquire compares every peer's with its own (slot
// e % 2 is rewritten only in call e + 2, which needs this rank's ready >= e + 1: the same
// argument as the data slots').  A difference (a call refused or made on one rank only, or
// with other shapes or options) fails the call on every rank, which also marks its header so
// that every later call, on any rank, is refused; a timed-out wait marks it too.
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "backend.h"
#include "numerics.h"

namespace gn {
namespace {

double now() {
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return double(ts.tv_sec) + 1e-9 * double(ts.tv_nsec);
}

uint64_t *ready_flag(char *buffer) { return reinterpret_cast<uint64_t *>(buffer + kCommFlags); }

// In the CPU header, past the magic, size and name (bytes 0-63): the owner's pid, pid-namespace
// inode and start time (0 where unknown; cpu_comm_stamp_owner), rank + 1 of the comm that uses
// the buffer as its own (cpu_comm_claim), this rank's give-up mark (0: never; else the epoch
// of the call it gave up on, low 48 bits, why (kGaveUp*) in bits 48-55 and the peer it names
// in 56-63) and two call signatures.
constexpr size_t kOwnerPid = 64, kOwnerRank = 88, kStepMark = 128, kStepSig = 192;
static_assert(kOwnerPid + 24 <= kOwnerRank && kOwnerRank + 8 <= kStepMark, "the header words do not overlap");
constexpr int kSigWords = 4;
static_assert(kStepSig + 2 * kSigWords * 8 <= kCommFlags, "the signatures fit the header");
uint64_t *step_mark(char *buffer) { return reinterpret_cast<uint64_t *>(buffer + kStepMark); }
uint64_t *signature(char *buffer, uint64_t e) { return reinterpret_cast<uint64_t *>(buffer + kStepSig) + (e & 1) * kSigWords; }

// Why a rank gave up, as the GPU's abort word keeps it (hip/allreduce.hip), so that
// gatednorm_comm_check and every later call report the cause and the peer, with the status
// of the call that failed (a review, session 45: they all said "out of step", INVALID_ARGUMENT,
// after a peer had died).
static_assert(GATEDNORM_COMM_MAX_WORLD_SIZE < 128 && GATEDNORM_COMM_MAX_WORLD_SIZE <= 256,
              "a rank fits the mark's 8 peer bits and the signature's 7 world bits");
constexpr uint64_t kGaveUpOutOfStep = 1, kGaveUpTimedOut = 2, kGaveUpPeerExited = 3, kGaveUpPeerGaveUp = 4;

// The first give-up of this rank's comm is the one kept (a later one follows from it).  Its
// store is what a waiting peer polls (wait_peers): so a rank's failure reaches the others at
// once, not at their timeout.  It follows the rank's flag of epoch e (published first), so a
// peer that sees the mark (acquire) sees that flag too.
constexpr uint64_t kMarkEpochMask = 0xffffffffffffull;
uint64_t mark_epoch(uint64_t m) { return m & kMarkEpochMask; }
uint64_t mark_why(uint64_t m) { return m >> 48 & 0xff; }
int mark_peer(uint64_t m) { return int(m >> 56); }
// The status of the call that failed for the mark's cause: calls out of step are the
// caller's mistake (on every rank), a lost or exited peer the device's.
gatednorm_status mark_status(uint64_t m) {
    return mark_why(m) == kGaveUpOutOfStep ? GATEDNORM_STATUS_INVALID_ARGUMENT : GATEDNORM_STATUS_DEVICE_ERROR;
}

void mark_gave_up(const CommState &c, uint64_t e, uint64_t why, int peer) {
    uint64_t *m = step_mark(c.buffers[c.rank]);
    const uint64_t v = (e & kMarkEpochMask) | why << 48 | uint64_t(peer & 0xff) << 56;
    uint64_t zero = 0;
    __atomic_compare_exchange_n(m, &zero, v, false, __ATOMIC_RELEASE, __ATOMIC_RELAXED);
}

// A rank (other than `skip`) that gave up at or before epoch max_e, or -1, its mark in *mark;
// one whose mark names a cause before one that only stopped because another did (whose mark,
// read with acquire, is then visible too: the echo read it before writing its own).
int rank_gave_up(const CommState &c, int skip, uint64_t max_e, uint64_t *mark) {
    int found = -1;
    for (int r = 0; r < c.world; ++r) {
        if (r == skip) continue;
        const uint64_t m = __atomic_load_n(step_mark(c.buffers[r]), __ATOMIC_ACQUIRE);
        if (!m || mark_epoch(m) > max_e) continue;
        const bool cause = mark_why(m) != kGaveUpPeerGaveUp;
        if (found < 0 || cause) found = r, *mark = m;
        if (cause) break;
    }
    return found;
}

// A peer that gave up at or before this call's epoch e.  A mark of a later epoch is a peer's
// next call: this one has every byte it needs, and its next call is refused at entry
// (cpu_comm_usable) — failing it would move the disagreement onto a healthy call (a review,
// session 45).
int peer_gave_up(const CommState &c, uint64_t e, uint64_t *mark) { return rank_gave_up(c, c.rank, mark_epoch(e), mark); }

// What a mark says its rank found, after "it " (e.g. "found rank 2's process exited").
void mark_cause(uint64_t m, char *text, size_t cap) {
    const int peer = mark_peer(m);
    switch (mark_why(m)) {
        case kGaveUpTimedOut:
            snprintf(text, cap, "waited %.3g s for rank %d and gave up (lost, killed, or out of step; GATEDNORM_COMM_TIMEOUT_S "
                     "sets the wait)", comm_wait_seconds(), peer);
            break;
        case kGaveUpPeerExited: snprintf(text, cap, "found rank %d's process exited", peer); break;
        case kGaveUpPeerGaveUp: snprintf(text, cap, "stopped because rank %d had given up", peer); break;
        default:
            snprintf(text, cap, "found the ranks out of step at rank %d (a call refused or made on one rank only, other "
                     "shapes, options or world size, or a buffer list out of rank order)", peer);
    }
}

// Peer q gave up (its mark m): this rank stops too, with the status of q's cause.
gatednorm_status fail_peer_gave_up(const CommState &c, int q, uint64_t m, const char *what, uint64_t e) {
    char cause[256];
    mark_cause(m, cause, sizeof cause);
    mark_gave_up(c, e, kGaveUpPeerGaveUp, q);
    return fail(mark_status(m),
                "comm: rank %d stopped at call %llu (its %s exchange): rank %d had given up on it (it %s); the "
                "communicator is unusable now",
                c.rank, (unsigned long long)e, what, q, cause);
}
uint64_t *gathered_flag(char *buffer) { return reinterpret_cast<uint64_t *>(buffer + kCommFlags + kCommGatheredOffset); }

// This process's pid namespace (its inode; 0 where unknown), read at each use (a stamp, a
// peer check every ~10 ms of waiting, the stale-segment sweep): a value kept from the first
// use would follow a child into a new pid namespace (clone with CLONE_NEWPID, unshare then
// fork), whose stamp would then pair its own pids with the parent's namespace, and a peer
// there could take a live rank for an exited one (a session-36 review).  A /proc that cannot
// resolve this process (another namespace's mount) gives 0: unknown, never judged.
uint64_t pid_namespace() {
    struct stat st;
    return stat("/proc/self/ns/pid", &st) == 0 ? uint64_t(st.st_ino) : uint64_t(0);
}

// /proc/PID/stat's state (field 3) and start time (field 22, clock ticks since boot); false
// (errno set) where it cannot be read.  The fields are counted after the command's last ')'.
bool proc_stat(uint64_t pid, char *state, uint64_t *start_time) {
    char path[48], text[1024];
    snprintf(path, sizeof path, "/proc/%llu/stat", (unsigned long long)pid);
    FILE *f = fopen(path, "r");
    if (!f) return false;
    const size_t n = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    text[n] = 0;
    const char *p = strrchr(text, ')');
    if (!p || p[1] != ' ') {
        errno = EINVAL;
        return false;
    }
    p += 2;
    *state = *p;
    for (int field = 3; field < 22 && p; ++field) {  // to field 22
        p = strchr(p, ' ');
        if (p) ++p;
    }
    if (!p) {
        errno = EINVAL;
        return false;
    }
    *start_time = strtoull(p, nullptr, 10);
    return true;
}

// Whether the process that made peer buffer b (its pid and start time in the header,
// cpu_comm_stamp_owner) has exited: gone from /proc, a zombie (an exited process its parent has not
// reaped, which kill(pid, 0) would call alive), or its pid now another process's (another
// start time).  Judged only where it shares this process's pid namespace (the header holds
// that namespace's inode), since another namespace's pid names another process here.
bool peer_exited(const char *b) {
    const uint64_t *o = reinterpret_cast<const uint64_t *>(b + kOwnerPid);
    const uint64_t pid = o[0], ns = o[1], start = o[2];
    if (!pid || !ns || !start || ns != pid_namespace()) return false;
    char state = 0;
    uint64_t t = 0;
    if (!proc_stat(pid, &state, &t)) return errno == ENOENT || errno == ESRCH;
    return state == 'Z' || state == 'X' || t != start;
}

// Waits (acquire) until every peer's flag (flag_of(buffer)) reaches e: spinning, then yielding,
// then sleeping.  It gives up, naming the peer and `what`, once the call's deadline (*deadline,
// set at its first wait: comm_wait_seconds() for the whole call, not each peer) has passed, at
// once when the peer's process has exited, or when any peer has given up (both checked every
// ~10 ms of waiting; check_no_peer_gave_up after the wait).
template <typename FlagOf>
gatednorm_status wait_peers(const CommState &c, FlagOf flag_of, uint64_t e, const char *what, double *deadline) {
    for (int r = 0; r < c.world; ++r) {
        if (r == c.rank) continue;
        const uint64_t *f = flag_of(c.buffers[r]);
        double next_check = 0.0;
        for (long spin = 0; __atomic_load_n(f, __ATOMIC_ACQUIRE) < e; ++spin) {
            if (spin < 64) continue;
            if ((spin & 255) == 0) {
                const double t = now();
                if (*deadline == 0.0) *deadline = t + comm_wait_seconds();
                if (t >= next_check) {
                    next_check = t + 0.01;
                    // the awaited peer's own exit first: the cause, where a peer's mark may only echo it
                    if (peer_exited(c.buffers[r]) && __atomic_load_n(f, __ATOMIC_ACQUIRE) < e) {
                        mark_gave_up(c, e, kGaveUpPeerExited, r);
                        return fail(GATEDNORM_STATUS_DEVICE_ERROR,
                                    "comm: rank %d's process (pid %llu) has exited before its %s of call %llu; the communicator "
                                    "is unusable now (make a new one over new buffers)",
                                    r, (unsigned long long)reinterpret_cast<const uint64_t *>(c.buffers[r] + kOwnerPid)[0], what,
                                    (unsigned long long)e);
                    }
                    // only while the flag is still missing: a peer publishes its flag before any
                    // mark, so one whose flag came meanwhile goes on to this rank's own finding
                    uint64_t m = 0;
                    const int q = peer_gave_up(c, e, &m);
                    if (q >= 0 && __atomic_load_n(f, __ATOMIC_ACQUIRE) < e) return fail_peer_gave_up(c, q, m, what, e);
                }
                if (t > *deadline) {
                    mark_gave_up(c, e, kGaveUpTimedOut, r);
                    return fail(GATEDNORM_STATUS_DEVICE_ERROR,
                                "comm: rank %d waited %.3g s for rank %d's %s of call %llu (every rank must make the same calls "
                                "with the same algorithm; GATEDNORM_COMM_TIMEOUT_S sets the wait); the communicator is unusable now",
                                c.rank, comm_wait_seconds(), r, what, (unsigned long long)e);
                }
            }
            if (spin < 4096) sched_yield();
            else {
                const timespec ns = {0, 20000};
                nanosleep(&ns, nullptr);
            }
        }
    }
    return GATEDNORM_STATUS_SUCCESS;
}

// After a wait that saw every flag (and the signatures judged: this rank's own finding comes
// first): any peer's give-up fails this call too, where the rank once completed it alone.
gatednorm_status check_no_peer_gave_up(const CommState &c, const char *what, uint64_t e) {
    uint64_t m = 0;
    const int q = peer_gave_up(c, e, &m);
    return q >= 0 ? fail_peer_gave_up(c, q, m, what, e) : GATEDNORM_STATUS_SUCCESS;
}

// Every peer's signature of epoch e against this rank's (after the acquire of their ready),
// and every peer's buffer claimed by that peer's rank (a C caller's list out of rank order, or
// a peer's buffer passed as one's own, would pair the wrong partials without a word).
gatednorm_status check_in_step(const CommState &c, uint64_t e) {
    const uint64_t *mine = signature(c.buffers[c.rank], e);
    for (int r = 0; r < c.world; ++r) {
        if (r == c.rank) continue;
        const uint64_t claimed = __atomic_load_n(reinterpret_cast<const uint64_t *>(c.buffers[r] + kOwnerRank), __ATOMIC_ACQUIRE);
        if (claimed != uint64_t(r) + 1) {
            mark_gave_up(c, e, kGaveUpOutOfStep, r);
            return fail(GATEDNORM_STATUS_INVALID_ARGUMENT,
                        "buffers[%d]: rank %d's list puts there the buffer %s (every rank must pass the buffers in rank "
                        "order, its own at its rank); the communicator is unusable now",
                        r, c.rank, claimed ? "of another rank" : "no rank uses as its own");
        }
        const uint64_t *theirs = signature(c.buffers[r], e);
        if (!memcmp(mine, theirs, kSigWords * 8)) continue;
        mark_gave_up(c, e, kGaveUpOutOfStep, r);
        if (!memcmp(mine, theirs, 3 * 8) && (mine[3] & 0xffff) == (theirs[3] & 0xffff))
            return fail(GATEDNORM_STATUS_INVALID_ARGUMENT,
                        "comm: rank %d's call %llu and rank %d's differ in their options (eps, weight_offset, the weight's "
                        "dtype, a residual or none, or the FP8 settings, the dtype quantize_rounded rounds to among them): "
                        "every rank must make the same calls with the same options; the communicator is unusable now",
                        c.rank, (unsigned long long)mine[0], r);
        return fail(GATEDNORM_STATUS_INVALID_ARGUMENT,
                    "comm: rank %d's call %llu (%lld tokens x %lld, dtype code %llu, world %llu%s) meets rank %d's call %llu "
                    "(%lld x %lld, dtype code %llu, world %llu%s): every rank must make the same calls with the same shapes, on "
                    "comms of one world size (one was refused or made on one rank only?); the communicator is unusable now",
                    c.rank, (unsigned long long)mine[0], (long long)mine[1], (long long)mine[2], (unsigned long long)(mine[3] & 0xff),
                    (unsigned long long)(mine[3] >> 9 & 0x7f), (mine[3] >> 8) & 1 ? ", two-shot" : "", r,
                    (unsigned long long)theirs[0], (long long)theirs[1], (long long)theirs[2], (unsigned long long)(theirs[3] & 0xff),
                    (unsigned long long)(theirs[3] >> 9 & 0x7f), (theirs[3] >> 8) & 1 ? ", two-shot" : "");
    }
    return GATEDNORM_STATUS_SUCCESS;
}

// Seconds as a plain decimal number ("600", "0.5"), read without the C library: atof follows
// the process's LC_NUMERIC, so an engine that called setlocale(LC_ALL, "") in a comma locale
// read "0.5" as 0 (the default wait) and ranks could disagree.  0 for anything else.
double parse_seconds(const char *v) {
    double t = 0.0, unit = 1.0;
    bool digits = false, dot = false;
    for (; *v; ++v) {
        if (*v >= '0' && *v <= '9') {
            digits = true;
            if (dot) t += (*v - '0') * (unit *= 0.1);
            else t = t * 10.0 + (*v - '0');
        } else if (*v == '.' && !dot) {
            dot = true;
        } else {
            return 0.0;
        }
    }
    return digits ? t : 0.0;
}

}  // namespace

double comm_wait_seconds() {
    static const double s = [] {
        const char *v = getenv("GATEDNORM_COMM_TIMEOUT_S");
        const double t = v ? parse_seconds(v) : 0.0;
        return t > 0.0 && t < 1e7 ? t : 600.0;  // as PyTorch's collective watchdog: a slow rank is not a lost one
    }();
    return s;
}

void cpu_comm_stamp_owner(char *buffer) {
    uint64_t *h = reinterpret_cast<uint64_t *>(buffer + kOwnerPid);
    char state = 0;
    uint64_t start = 0;
    h[0] = uint64_t(getpid());
    h[1] = pid_namespace();
    h[2] = proc_stat(h[0], &state, &start) ? start : 0;
}

// A rank killed between its buffer's alloc and the unlink after setup leaves a named segment
// that nothing frees.  Each CPU alloc removes this user's gatednorm segments whose creator
// (stamped in the header) has exited, judged as a waiting peer judges it (peer_exited): an
// unstamped header (one being made now), another pid namespace's or another user's segment
// is left alone.  Any process that could still use such a segment has it mapped (the mapping
// outlives the name); a new one could not join its comm, whose owner is gone.
void cpu_comm_remove_stale_segments() {
    DIR *dir = opendir("/dev/shm");  // where glibc's shm_open keeps its names
    if (!dir) return;
    const uid_t me = geteuid();
    while (const dirent *entry = readdir(dir)) {
        if (strncmp(entry->d_name, "gatednorm.", 10) != 0 || strlen(entry->d_name) > 46) continue;
        char name[48];
        snprintf(name, sizeof name, "/%s", entry->d_name);
        const int fd = shm_open(name, O_RDONLY, 0);
        if (fd < 0) continue;
        uint64_t header[(kOwnerPid + 24) / 8];
        struct stat st;
        const bool stale = fstat(fd, &st) == 0 && st.st_uid == me && size_t(st.st_size) >= kCommHeader &&
                           pread(fd, header, sizeof header, 0) == ssize_t(sizeof header) && header[0] == kCommMagic &&
                           header[1] == uint64_t(st.st_size) && peer_exited(reinterpret_cast<const char *>(header));
        close(fd);
        if (stale) shm_unlink(name);
    }
    closedir(dir);
}

void cpu_comm_claim(char *own, int rank) {
    __atomic_store_n(reinterpret_cast<uint64_t *>(own + kOwnerRank), uint64_t(rank) + 1, __ATOMIC_RELEASE);
}

// Any rank's mark, this one's included, of any epoch (the first naming a cause): its cause,
// its peer, and the status the failed call returned.
gatednorm_status cpu_comm_usable(const CommState &c) {
    uint64_t m = 0;
    const int at = rank_gave_up(c, -1, kMarkEpochMask, &m);
    if (at < 0) return GATEDNORM_STATUS_SUCCESS;
    char cause[256];
    mark_cause(m, cause, sizeof cause);
    return fail(mark_status(m), "comm: unusable: rank %d at its call %llu %s; make a new communicator over new buffers", at,
                (unsigned long long)mark_epoch(m), cause);
}

// 48 bits of FNV-1a over the options that change a call's result: ranks that differ there
// would compute different results from one sum (a hostile review, session 43: eps 1e-6 on
// one rank and 4 on the other passed).  Not y's presence or dtype, nor where outputs go (a
// rank's own choice; the values are the same); FP8 outputs on one rank only do differ (their
// settings are hashed where asked).  The weight's values are not read (hidden elements a
// call); its dtype is.
uint64_t options_hash(const AddRmsnormProblem &p) {
    uint64_t h = 0xcbf29ce484222325ull;
    auto mix = [&h](uint64_t v) {
        for (int i = 0; i < 8; ++i, v >>= 8) h = (h ^ (v & 0xff)) * 0x100000001b3ull;
    };
    // -0 and +0 give the same results: one hash (RNE: -0 + 0 = +0); a rank given eps -0 and
    // one given +0 were "out of step" (a review, session 46)
    mix(f32_bits(p.eps + 0.0f));
    mix(f32_bits(p.weight_offset + 0.0f));
    mix(uint64_t(p.weight_dtype));
    mix(p.res ? uint64_t(p.res_dtype) + 1 : 0);
    mix(uint64_t(p.normalize));
    if (p.has_quant) {
        mix(uint64_t(p.quant.format) + 1);
        mix(f32_bits(p.quant.fp8_max));
        mix(f32_bits(p.quant.amax_floor));
        mix(uint64_t(p.quant.scale_format));
        mix(uint64_t(p.quant.group));
        mix(p.quant.quantize_rounded ? uint64_t(p.round_dtype) + 1 : 0);
    }
    return h & 0xffffffffffffull;
}

gatednorm_status cpu_allreduce_add_rmsnorm(const CommState &c, AddRmsnormProblem p, bool two_shot) {
    const int xs = dtype_size(p.x_dtype);
    const size_t row = size_t(p.hidden) * xs;
    char *buf = c.buffers[c.rank];
    uint64_t *own = ready_flag(buf);
    const uint64_t e = __atomic_load_n(own, __ATOMIC_RELAXED) + 1;
    const size_t slot = kCommHeader + (e & 1) * c.slot_bytes;
    const size_t red_at = kCommHeader + 2 * c.slot_bytes;  // the reduced region, rows as in the slots
    char *mine = buf + slot;
    for (int64_t t = 0; t < p.tokens; ++t) memcpy(mine + t * row, p.x + t * p.x_st * xs, row);
    uint64_t *sig = signature(buf, e);
    sig[0] = c.calls;
    sig[1] = uint64_t(p.tokens);
    sig[2] = uint64_t(p.hidden);
    // the world size too: a rank built for W = 2 among W = 3 ones summed other partials and
    // every rank reported success (a review, session 45; the GPU's tag holds it)
    sig[3] = uint64_t(p.x_dtype) | (uint64_t(two_shot) << 8) | (uint64_t(c.world) << 9) | (options_hash(p) << 16);
    __atomic_store_n(own, e, __ATOMIC_RELEASE);  // publishes the partial and the signature
    double deadline = 0.0;  // the call's, set at its first wait
    gatednorm_status st = wait_peers(c, ready_flag, e, "partial", &deadline);
    if (st != GATEDNORM_STATUS_SUCCESS) return st;
    st = check_in_step(c, e);
    if (st == GATEDNORM_STATUS_SUCCESS) st = check_no_peer_gave_up(c, "partial", e);
    if (st != GATEDNORM_STATUS_SUCCESS) return st;

    // One-shot: every column; two-shot: this rank's share.
    const int64_t lo = two_shot ? comm_share_begin(c.rank, c.world, p.hidden) : 0;
    const int64_t hi = two_shot ? comm_share_begin(c.rank + 1, c.world, p.hidden) : p.hidden;
    char *red = buf + red_at;
    const char *s0 = c.buffers[0] + slot;
    for (int64_t t = 0; t < p.tokens; ++t)
        for (int64_t j = lo; j < hi; ++j) {
            const size_t off = size_t(t) * row + size_t(j) * xs;
            float acc = load_as_f32(s0 + off, p.x_dtype);  // rank 0's value itself: no 0 + x (keeps -0)
            for (int r = 1; r < c.world; ++r) acc += load_as_f32(c.buffers[r] + slot + off, p.x_dtype);
            store_from_f32(red + off, p.x_dtype, acc);
        }
    if (two_shot) {
        __atomic_store_n(gathered_flag(buf), e, __ATOMIC_RELEASE);
        st = wait_peers(c, gathered_flag, e, "reduced share", &deadline);
        if (st == GATEDNORM_STATUS_SUCCESS) st = check_no_peer_gave_up(c, "reduced share", e);
        if (st != GATEDNORM_STATUS_SUCCESS) return st;
        for (int q = 0; q < c.world; ++q) {
            if (q == c.rank) continue;
            const int64_t qlo = comm_share_begin(q, c.world, p.hidden), qhi = comm_share_begin(q + 1, c.world, p.hidden);
            if (qhi == qlo) continue;
            const char *from = c.buffers[q] + red_at;
            for (int64_t t = 0; t < p.tokens; ++t) {
                const size_t off = size_t(t) * row + size_t(qlo) * xs;
                memcpy(red + off, from + off, size_t(qhi - qlo) * xs);
            }
        }
    }
    p.x = red;
    p.x_st = p.hidden;
    return cpu_add_rmsnorm(p);
}

}  // namespace gn
