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

// One parallel loop in flight: workers claim indices from `next` until it passes `n`.
struct Job {
  int64_t n = 0;
  const std::function<void(int64_t)>* fn = nullptr;
  std::atomic<int64_t> next{0};
  std::atomic<int> helpers_left{0};  // how many pool workers may still join
  std::mutex mu;
  std::condition_variable done_cv;
  int active = 0;  // threads currently inside run()
  std::exception_ptr error;
  std::atomic<bool> failed{false};

  void run() {
    for (;;) {
      if (failed.load(std::memory_order_relaxed)) return;
      int64_t i = next.fetch_add(1, std::memory_order_relaxed);
      if (i >= n) return;
      try {
        (*fn)(i);
      } catch (...) {
        std::lock_guard<std::mutex> lock(mu);
        if (!error) error = std::current_exception();
        failed.store(true);
      }
    }
  }
};

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
    cv_.notify_all();
    for (auto& t : threads_) t.join();
  }

  int workers() const { return static_cast<int>(threads_.size()); }

  void submit(const std::shared_ptr<Job>& job, int helpers) {
    if (helpers <= 0) return;
    job->helpers_left.store(helpers);
    {
      std::lock_guard<std::mutex> lock(mu_);
      queue_.push_back(job);
    }
    if (helpers == 1) {
      cv_.notify_one();
    } else {
      cv_.notify_all();
    }
  }

 private:
  void worker() {
    for (;;) {
      std::shared_ptr<Job> job;
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [this] { return stop_ || !queue_.empty(); });
        if (stop_) return;
        job = queue_.front();
        // A job leaves the queue once enough helpers joined it or its work is handed out.
        if (job->helpers_left.fetch_sub(1) <= 1 || job->next.load() >= job->n) queue_.pop_front();
      }
      {
        std::lock_guard<std::mutex> lock(job->mu);
        ++job->active;
      }
      job->run();
      {
        std::lock_guard<std::mutex> lock(job->mu);
        --job->active;
      }
      job->done_cv.notify_all();
    }
  }

  std::vector<std::thread> threads_;
  std::deque<std::shared_ptr<Job>> queue_;
  std::mutex mu_;
  std::condition_variable cv_;
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
  pool().submit(job, static_cast<int>(std::min<int64_t>(t - 1, n - 1)));
  {
    std::lock_guard<std::mutex> lock(job->mu);
    ++job->active;
  }
  job->run();
  std::unique_lock<std::mutex> lock(job->mu);
  --job->active;
  // Make sure no late helper can still start: claim every remaining index.
  job->next.store(n);
  job->helpers_left.store(0);
  job->done_cv.wait(lock, [&] { return job->active == 0; });
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
