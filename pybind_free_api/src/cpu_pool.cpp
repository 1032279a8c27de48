// The CPU backend's thread pool (cpu_pool.h).
#include "cpu_pool.h"

#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <exception>
#include <new>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

#include "backend.h"
#include "cpu_fenv.h"
#include "tensor_checks.h"

namespace gn {

namespace {

constexpr int kMaxThreads = 256;

#if defined(__linux__)
// The CPUs this process may run on: its main thread's mask (what taskset, numactl or a
// cgroup gave the process), not the calling thread's.  The pool is made once and serves
// every later caller, so the first caller's own pinning (a framework thread pinned to one
// core) must not set its size or where its workers run.  A main thread that has exited
// (pthread_exit) still answers with the mask it last had; the caller's mask is read only if
// that query fails.
bool process_cpus(cpu_set_t *set) {
    return sched_getaffinity(getpid(), sizeof *set, set) == 0 || sched_getaffinity(0, sizeof *set, set) == 0;
}
#endif

int default_threads() {
    if (const char *env = getenv("GATEDNORM_NUM_THREADS")) {
        char *end = nullptr;
        const long v = strtol(env, &end, 10);
        if (end != env && *end == '\0' && v >= 1) return v > kMaxThreads ? kMaxThreads : int(v);
    }
#if defined(__linux__)
    cpu_set_t set;
    if (process_cpus(&set)) {
        const int n = CPU_COUNT(&set);
        if (n >= 1) return n > kMaxThreads ? kMaxThreads : n;
    }
#endif
    const unsigned n = std::thread::hardware_concurrency();
    return n == 0 ? 1 : (n > unsigned(kMaxThreads) ? kMaxThreads : int(n));
}

void pool_after_fork();

// Whether the pool's state belongs to this process.  fork() runs pool_after_fork in the child
// (an atfork handler), which renews the state; a child made without the handlers (glibc's
// _Fork, a raw clone) inherits mutexes held by threads it does not have and condition
// variables whose waiters are such threads, and the parent's worker handles: its first
// parallel region could wait forever in pthread_cond_broadcast
// (__condvar_quiesce_and_switch_g1; 1 child in 10-30 while the parent was busy), and a
// set_num_threads there joined threads that do not exist (every such child hung; session
// 36).  Such a child may not even start threads or allocate safely
// (malloc's and the thread-stack cache's locks are not reset either), so it never touches
// the pool: its host calls run on the calling thread.  The mark is a page the kernel zeroes
// in every child (MADV_WIPEONFORK, Linux 4.14+), so a child whose pid equals the one that
// set it (pid reuse, a new pid namespace) still reads as a child; and the pid, for where the
// page is missing or not wiped (qemu-user 7.2 accepts the advice and ignores it: every raw
// fork child hung there, a review of 11ed26d).
class ProcessMark {
public:
    ProcessMark() : pid_(getpid()) {
#if defined(__linux__) && defined(MADV_WIPEONFORK)
        const long page = sysconf(_SC_PAGESIZE);
        const size_t bytes = size_t(page > 0 ? page : 4096);
        void *m = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (m != MAP_FAILED && madvise(m, bytes, MADV_WIPEONFORK) == 0)
            page_ = new (m) std::atomic<uint32_t>(1u);  // never unmapped (the pool lives as long)
        else if (m != MAP_FAILED)
            munmap(m, bytes);
#endif
    }
    bool current() const { return (!page_ || page_->load(std::memory_order_relaxed) == 1u) && pid_ == getpid(); }
    void set() {  // in fork()'s child, before it has a second thread
        if (page_) page_->store(1u, std::memory_order_relaxed);
        pid_ = getpid();
    }

private:
    std::atomic<uint32_t> *page_ = nullptr;
    pid_t pid_;
};

class Pool {
public:
    Pool() {
        // A forked child inherits the mutexes in whatever state a parent thread left them
        // (one may be inside a parallel region) and none of the workers: start afresh.
        pthread_atfork(nullptr, nullptr, [] { pool_after_fork(); });
    }

    // Lock-free: a host GEMM asks on every call, and a forked child must not wait on a
    // mutex its parent's threads held.
    int threads() {
        int c = configured_.load(std::memory_order_relaxed);
        if (c <= 0) {
            // The default replaces "unset" only if no set_threads landed meanwhile (a plain
            // store overwrote one: set_num_threads(5) then read 2).
            const int d = default_threads();
            c = configured_.compare_exchange_strong(c, d, std::memory_order_relaxed) ? d : c;
        }
        return c;
    }

    void set_threads(int n) {
        if (!mark_.current()) {  // a child of a raw fork: no workers to stop (see ProcessMark)
            configured_.store(n, std::memory_order_relaxed);
            return;
        }
        std::lock_guard<std::mutex> g(dispatch_);
        stop_workers();
        configured_.store(n, std::memory_order_relaxed);
    }

    // fork()'s child, alone: fresh synchronization state and no workers (the parent's do not
    // exist here; their objects are abandoned, never joined nor destroyed, and nothing is
    // allocated).
    void after_fork() {
        new (&dispatch_) std::mutex;
        new (&m_) std::mutex;
        new (&work_) std::condition_variable;
        new (&idle_) std::condition_variable;
        new (&workers_) std::vector<std::thread>;
        active_ = 0;
        stop_ = false;
        new (&failure_) std::exception_ptr;
        mark_.set();
    }

    void run(int64_t n, int64_t cost, RangeFn fn, void *ctx) {
        if (n <= 0) return;
        if (cpu_work_is_tiny(n, cost)) return fn(ctx, 0, n);  // tiny: no thread is woken
        if (!mark_.current()) return fn(ctx, 0, n);  // a child of a raw fork (ProcessMark)
        const int64_t by_work = int64_t(double(n) * double(cost < 1 ? 1 : cost) / double(kCpuMinWorkPerThread));
        // One parallel region at a time; a second concurrent caller (or a nested call from
        // a worker) does its own work on its own thread.
        std::unique_lock<std::mutex> d(dispatch_, std::try_to_lock);
        if (!d.owns_lock()) return fn(ctx, 0, n);
        const int t = threads_locked();
        int64_t parts = by_work < t ? by_work : t;
        if (parts > n) parts = n;
        if (parts < 2) return fn(ctx, 0, n);
        if (!ensure_workers(t - 1)) return fn(ctx, 0, n);
        {
            std::unique_lock<std::mutex> lk(m_);
            idle_.wait(lk, [&] { return active_ == 0; });  // no worker still holds the last job
            job_ = Job{fn, ctx, n, parts};
            next_.store(0, std::memory_order_relaxed);
            done_.store(0, std::memory_order_relaxed);
            worker_flags_.store(0, std::memory_order_relaxed);
            ++generation_;
        }
        work_.notify_all();
        run_parts(job_);
        std::unique_lock<std::mutex> lk(m_);
        idle_.wait(lk, [&] { return done_.load(std::memory_order_acquire) == parts && active_ == 0; });
        // The exception flags the workers' parts raised (an inf * 0 in their rows) become the
        // caller's, as if it had computed every row itself: which thread took a row must not
        // show in the caller's fetestexcept (cpu_fenv.h).
        fp_flags_raise(FpFlags(worker_flags_.load(std::memory_order_relaxed)));
        // A part that threw (out of host memory for its row buffers) was caught where it ran,
        // so no worker died and every part finished before this frame (the job's context)
        // unwinds; the first exception goes on to the entry point, which turns it into a
        // status.  Parts that completed have written their rows (documented in the header).
        if (failure_) {
            std::exception_ptr e = failure_;
            failure_ = nullptr;
            lk.unlock();
            std::rethrow_exception(e);
        }
    }

private:
    struct Job {
        RangeFn fn = nullptr;
        void *ctx = nullptr;
        int64_t n = 0, parts = 0;
    };

    int threads_locked() { return threads(); }

    bool ensure_workers(int want) {
        if (int(workers_.size()) == want) return true;
        stop_workers();
#if defined(__linux__)
        cpu_set_t cpus;
        const bool have_cpus = process_cpus(&cpus);
#endif
        // Started from inside an entry point, under guarded()'s IeeeFloatScope: a thread
        // inherits its creator's floating-point control state, so the workers keep the IEEE
        // defaults even when the pool is started by a thread that flushes subnormals
        // (cpu_fenv.h; an XLA thread calling through gatednorm.jax_ops, say).
        try {
            for (int i = 0; i < want; ++i) {
                workers_.emplace_back([this] { worker(); });
#if defined(__linux__)
                // Set here, by the thread starting them, so both hold when the call returns:
                // workers run on the process's CPUs, not on those of this thread (a thread
                // inherits its creator's mask: one caller pinned to a core put every worker
                // on that core), and carry a name for top -H, gdb and /proc.
                const pthread_t h = workers_.back().native_handle();
                if (have_cpus) (void)pthread_setaffinity_np(h, sizeof cpus, &cpus);
                (void)pthread_setname_np(h, "gatednorm-cpu");
#endif
            }
        } catch (...) {
            stop_workers();
            return false;
        }
        return true;
    }

    void stop_workers() {
        {
            std::lock_guard<std::mutex> lk(m_);
            stop_ = true;
        }
        work_.notify_all();
        for (auto &th : workers_) th.join();
        workers_.clear();
        std::lock_guard<std::mutex> lk(m_);
        stop_ = false;
    }

    void run_parts(const Job &j) {
        for (;;) {
            const int64_t i = next_.fetch_add(1, std::memory_order_relaxed);
            if (i >= j.parts) return;
            const int64_t b = j.n * i / j.parts, e = j.n * (i + 1) / j.parts;
            try {
                j.fn(j.ctx, b, e);
            } catch (...) {
                std::lock_guard<std::mutex> lk(m_);
                if (!failure_) failure_ = std::current_exception();
            }
            done_.fetch_add(1, std::memory_order_acq_rel);
        }
    }

    void worker() {
        uint64_t seen;
        {
            std::lock_guard<std::mutex> lk(m_);
            seen = generation_;
        }
        for (;;) {
            Job j;
            {
                std::unique_lock<std::mutex> lk(m_);
                work_.wait(lk, [&] { return stop_ || generation_ != seen; });
                if (stop_) return;
                seen = generation_;
                j = job_;
                ++active_;
            }
            fp_flags_clear();  // a worker's flags from earlier jobs are not this caller's
            run_parts(j);
            worker_flags_.fetch_or(uint64_t(fp_flags_get()), std::memory_order_relaxed);
            {
                std::lock_guard<std::mutex> lk(m_);
                --active_;
            }
            idle_.notify_all();
        }
    }

    std::mutex dispatch_;  // held by the one caller running a parallel region
    std::mutex m_;
    std::condition_variable work_, idle_;
    std::vector<std::thread> workers_;
    Job job_;
    std::atomic<int64_t> next_{0}, done_{0};
    uint64_t generation_ = 0;
    int active_ = 0;
    bool stop_ = false;
    std::atomic<int> configured_{0};
    std::exception_ptr failure_;  // the first part that threw in the current region (under m_)
    std::atomic<uint64_t> worker_flags_{0};  // exception flags the workers raised in this region
    ProcessMark mark_;
};

// Never destroyed: a thread may still be inside a call when the process exits (Python
// daemon threads, detached C++ threads), and a destructor joining the workers then raced
// that call (ThreadSanitizer: a condition variable destroyed while notified, a use after free).
// The library is linked -z nodelete, so dlclose never unmaps the code its workers wait in.
// Made when the library loads, not on first use: a function-local static's guard, held by a
// thread constructing the pool when another thread forked, left the child waiting on it
// forever (session 35's review).  The constructor only registers the fork handler.
Pool &g_pool = *new Pool;
Pool &pool() { return g_pool; }

void pool_after_fork() { pool().after_fork(); }

}  // namespace

void cpu_parallel_for_impl(int64_t n, int64_t cost, RangeFn fn, void *ctx) { pool().run(n, cost, fn, ctx); }

int cpu_num_threads() { return pool().threads(); }

void cpu_set_num_threads(int n) { pool().set_threads(n < 0 ? 0 : (n > kMaxThreads ? kMaxThreads : n)); }

}  // namespace gn

extern "C" {

GATEDNORM_API gatednorm_status gatednorm_set_num_threads(int32_t num_threads) {
    if (num_threads < 0)
        return gn::fail(GATEDNORM_STATUS_INVALID_ARGUMENT,
                        "num_threads: %d; must be >= 1, or 0 for the default (GATEDNORM_NUM_THREADS, else the cores)",
                        int(num_threads));
    return gn::guarded("set_num_threads", [&] {  // joining the old workers can throw
        gn::cpu_set_num_threads(num_threads);
        return GATEDNORM_STATUS_SUCCESS;
    });
}

GATEDNORM_API gatednorm_status gatednorm_get_num_threads(int32_t *num_threads) {
    if (!num_threads) return gn::fail(GATEDNORM_STATUS_INVALID_ARGUMENT, "num_threads: must not be NULL");
    *num_threads = gn::cpu_num_threads();
    return GATEDNORM_STATUS_SUCCESS;
}

}  // extern "C"
