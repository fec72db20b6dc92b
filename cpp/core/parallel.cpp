#include "parallel.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <deque>
#include <exception>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace gocor {
namespace {

// One parallel loop in flight: threads claim indices from `next` until it passes `n`.
struct Job {
  int64_t n = 0;
  const std::function<void(int64_t)>* fn = nullptr;
  // The loop whose item started this one (nullptr: a call from outside the pool's loops). It
  // outlives this job: its item waits for this job to finish.
  const Job* parent = nullptr;
  std::atomic<int64_t> next{0};
  std::atomic<int> helpers_left{0};  // how many more threads may still join
  int active = 0;                    // threads inside run(); guarded by the pool's mutex
  std::mutex error_mu;
  std::exception_ptr error;
  std::atomic<bool> failed{false};

  void run();
  bool descends_from(const Job* ancestor) const {
    for (const Job* j = parent; j != nullptr; j = j->parent)
      if (j == ancestor) return true;
    return false;
  }
};

// The loop whose item the calling thread is running (the parent of the loops it starts).
thread_local const Job* current_job = nullptr;

void Job::run() {
  const Job* outer = current_job;
  current_job = this;
  for (;;) {
    if (failed.load(std::memory_order_relaxed)) break;
    int64_t i = next.fetch_add(1, std::memory_order_relaxed);
    if (i >= n) break;
    try {
      (*fn)(i);
    } catch (...) {
      std::lock_guard<std::mutex> lock(error_mu);
      if (!error) error = std::current_exception();
      failed.store(true);
    }
  }
  current_job = outer;
}

class Pool {
 public:
  explicit Pool(int workers) {
    for (int i = 0; i < workers; ++i) threads_.emplace_back([this] { worker(); });
  }
  ~Pool() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    work_cv_.notify_all();
    for (auto& t : threads_) t.join();
  }

  int workers() const { return static_cast<int>(threads_.size()); }

  // Queues `job` for up to `helpers` more threads; the caller runs it too (active = 1).
  void submit(const std::shared_ptr<Job>& job, int helpers) {
    job->helpers_left.store(helpers);
    job->active = 1;
    if (helpers <= 0) return;
    bool waiters;
    {
      std::lock_guard<std::mutex> lock(mu_);
      queue_.push_back(job);
      waiters = waiting_ > 0;
    }
    if (helpers == 1) {
      work_cv_.notify_one();
    } else {
      work_cv_.notify_all();
    }
    // A thread waiting for an ancestor of this loop may help with it.
    if (waiters) wait_cv_.notify_all();
  }

  // The caller's part of `job` is done: it leaves the queue, and until every thread that joined
  // it is done the caller runs the items of loops those threads started (the job's descendants)
  // instead of idling. Why: when two sides of a stage run side by side (match's each_side), the
  // side that finishes first would otherwise wait while the other side's loops run on one thread.
  void finish(const std::shared_ptr<Job>& job) {
    std::unique_lock<std::mutex> lock(mu_);
    const auto it = std::find(queue_.begin(), queue_.end(), job);
    if (it != queue_.end()) queue_.erase(it);
    --job->active;
    for (;;) {
      std::shared_ptr<Job> other;
      ++waiting_;
      wait_cv_.wait(lock, [&] {
        if (job->active == 0) return true;
        other = take([&](const Job& q) { return q.descends_from(job.get()); });
        return other != nullptr;
      });
      --waiting_;
      if (!other) return;
      run_joined(other, lock);
    }
  }

 private:
  // The first queued job that `accept` takes, counted as joined by one more thread (it leaves the
  // queue once enough threads joined or its items are all handed out); nullptr if none.
  template <class Accept>
  std::shared_ptr<Job> take(const Accept& accept) {
    for (auto it = queue_.begin(); it != queue_.end(); ++it) {
      if (!accept(**it)) continue;
      std::shared_ptr<Job> job = *it;
      if (job->helpers_left.fetch_sub(1) <= 1 || job->next.load() >= job->n) queue_.erase(it);
      ++job->active;
      return job;
    }
    return nullptr;
  }

  // Runs the items of a job this thread joined (take), the lock released meanwhile.
  void run_joined(const std::shared_ptr<Job>& job, std::unique_lock<std::mutex>& lock) {
    lock.unlock();
    job->run();
    lock.lock();
    if (--job->active == 0 && waiting_ > 0) wait_cv_.notify_all();
  }

  void worker() {
    std::unique_lock<std::mutex> lock(mu_);
    for (;;) {
      work_cv_.wait(lock, [this] { return stop_ || !queue_.empty(); });
      if (stop_) return;
      std::shared_ptr<Job> job = take([](const Job&) { return true; });
      run_joined(job, lock);
    }
  }

  std::vector<std::thread> threads_;
  std::deque<std::shared_ptr<Job>> queue_;
  std::mutex mu_;
  std::condition_variable work_cv_;  // idle workers: a job was queued
  std::condition_variable wait_cv_;  // callers in finish(): a job was queued or a thread left one
  int waiting_ = 0;                  // callers in finish()
  bool stop_ = false;
};

int detect_pool_size() {
  if (const char* env = std::getenv("GOCOR_THREADS")) {
    int v = std::atoi(env);
    if (v >= 1 && v <= 1024) return v;
  }
  unsigned hc = std::thread::hardware_concurrency();
  return hc == 0 ? 1 : static_cast<int>(hc);
}

Pool& pool() {
  // Workers = size - 1: the calling thread always takes part in its own loop.
  static Pool p(std::max(0, detect_pool_size() - 1));
  return p;
}

}  // namespace

int pool_size() {
  return pool().workers() + 1;
}

void parallel_for(int64_t n, int threads, const std::function<void(int64_t)>& fn) {
  if (n <= 0) return;
  int t = threads <= 0 ? pool_size() : std::min(threads, pool_size());
  if (t <= 1 || n == 1) {
    for (int64_t i = 0; i < n; ++i) fn(i);
    return;
  }
  auto job = std::make_shared<Job>();
  job->n = n;
  job->fn = &fn;
  job->parent = current_job;
  pool().submit(job, static_cast<int>(std::min<int64_t>(t - 1, n - 1)));
  job->run();
  // After a failure the remaining items are not run; no late helper may start one either.
  job->next.store(n);
  pool().finish(job);
  if (job->error) std::rethrow_exception(job->error);
}

void parallel_chunks(int64_t n, int threads, int64_t min_chunk,
                     const std::function<void(int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  int t = threads <= 0 ? pool_size() : std::min(threads, pool_size());
  int64_t chunk = std::max<int64_t>(min_chunk < 1 ? 1 : min_chunk, (n + t - 1) / t);
  int64_t tasks = (n + chunk - 1) / chunk;
  parallel_for(tasks, t, [&](int64_t k) {
    int64_t b = k * chunk;
    fn(b, std::min(n, b + chunk));
  });
}

}  // namespace gocor
