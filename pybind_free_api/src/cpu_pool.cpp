// The CPU backend's thread pool (cpu_pool.h).
#include "cpu_pool.h"

#include <sched.h>
#include <stdlib.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

#include "backend.h"

namespace gn {

namespace {

constexpr int kMaxThreads = 256;

int default_threads() {
    if (const char *env = getenv("GATEDNORM_NUM_THREADS")) {
        char *end = nullptr;
        const long v = strtol(env, &end, 10);
        if (end != env && *end == '\0' && v >= 1) return v > kMaxThreads ? kMaxThreads : int(v);
    }
#if defined(__linux__)
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0) {
        const int n = CPU_COUNT(&set);
        if (n >= 1) return n > kMaxThreads ? kMaxThreads : n;
    }
#endif
    const unsigned n = std::thread::hardware_concurrency();
    return n == 0 ? 1 : (n > unsigned(kMaxThreads) ? kMaxThreads : int(n));
}

class Pool {
public:
    ~Pool() { stop_workers(); }

    int threads() {
        std::lock_guard<std::mutex> g(dispatch_);
        return threads_locked();
    }

    void set_threads(int n) {
        std::lock_guard<std::mutex> g(dispatch_);
        stop_workers();
        configured_ = n;
    }

    void run(int64_t n, int64_t cost, RangeFn fn, void *ctx) {
        if (n <= 0) return;
        const double work = double(n) * double(cost < 1 ? 1 : cost);
        const int64_t by_work = int64_t(work / double(kCpuMinWorkPerThread));
        if (by_work < 2) return fn(ctx, 0, n);  // tiny: no thread is woken
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
            ++generation_;
        }
        work_.notify_all();
        run_parts(job_);
        std::unique_lock<std::mutex> lk(m_);
        idle_.wait(lk, [&] { return done_.load(std::memory_order_acquire) == parts && active_ == 0; });
    }

private:
    struct Job {
        RangeFn fn = nullptr;
        void *ctx = nullptr;
        int64_t n = 0, parts = 0;
    };

    int threads_locked() {
        if (configured_ <= 0) configured_ = default_threads();
        return configured_;
    }

    bool ensure_workers(int want) {
        if (owner_pid_ != getpid()) {  // a forked child: the parent's workers do not exist here
            new std::vector<std::thread>(std::move(workers_));  // leaked: never joined nor destroyed
            workers_.clear();
            owner_pid_ = getpid();
            active_ = 0;
            stop_ = false;
        }
        if (int(workers_.size()) == want) return true;
        stop_workers();
        try {
            for (int i = 0; i < want; ++i) workers_.emplace_back([this] { worker(); });
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
            j.fn(j.ctx, b, e);
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
            run_parts(j);
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
    int configured_ = 0;
    pid_t owner_pid_ = getpid();
};

Pool &pool() {
    static Pool p;
    return p;
}

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
    gn::cpu_set_num_threads(num_threads);
    return GATEDNORM_STATUS_SUCCESS;
}

GATEDNORM_API gatednorm_status gatednorm_get_num_threads(int32_t *num_threads) {
    if (!num_threads) return gn::fail(GATEDNORM_STATUS_INVALID_ARGUMENT, "num_threads: must not be NULL");
    *num_threads = gn::cpu_num_threads();
    return GATEDNORM_STATUS_SUCCESS;
}

}  // extern "C"
