// corrGlobal / corrLocal: plain feature correlation.
#include "correlation.h"

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdint>

#include "dispatch.h"
#include "simd.h"
#include "worker.h"

namespace gocor_napi {
namespace {

// Largest Euclidean norm over channels among the P feature vectors of each batch element of x
// (B, C, P); NaN or inf when x holds one. Float sums of squares (4 lanes): their relative error,
// at most C * 2^-24, is far inside the margin require_finite_products leaves.
float max_norm(const FreshF32& x, int B, int C, size_t P) {
  using gocor::simd::v4;
  std::vector<float> sq(P + 4);
  v4 best{};
  for (int b = 0; b < B; ++b) {
    std::fill(sq.begin(), sq.end(), 0.f);
    for (int c = 0; c < C; ++c) {
      const float* row = x.data() + (size_t(b) * C + c) * P;
      size_t i = 0;
      for (; i + 4 <= P; i += 4) {
        const v4 v = gocor::simd::loadu<v4>(row + i);
        gocor::simd::storeu<v4>(&sq[i], gocor::simd::loadu<v4>(&sq[i]) + v * v);
      }
      for (; i < P; ++i) sq[i] += row[i] * row[i];
    }
    for (size_t i = 0; i < P; i += 4) {
      const v4 v = gocor::simd::loadu<v4>(&sq[i]);  // lanes past P are 0
      best = v > best || v != v ? v : best;
    }
  }
  float m = 0;
  for (int l = 0; l < 4; ++l) m = best[l] > m || std::isnan(best[l]) ? best[l] : m;
  return std::sqrt(m);
}

// Refuses a volume of products <ref, query> * scale that overflowed float32. By Cauchy-Schwarz
// every product is at most max|ref| * max|query| * scale; when that bound (with a wide margin for
// the float32 rounding of the sums) is finite the volume is, and the pass over it is skipped.
void require_finite_products(const FreshF32& out, const FreshF32& ref, const FreshF32& query, int B,
                             int C, size_t Pr, size_t Pq, double scale) {
  const double bound = double(max_norm(ref, B, C, Pr)) * max_norm(query, B, C, Pq) * scale;
  if (bound < 0.25 * FLT_MAX) return;  // false for NaN too
  require_finite(out.data(), out.size(), "the correlation volume");
}

struct CorrJob : Job {
  FreshF32 ref, query;
  FreshF32 out;  // written in full by the kernel
  napi_value result(Out& o) override {
    napi_value r = o.object();
    o.set(r, "data", o.f32(std::move(out)));
    return r;
  }
};

struct CorrGlobalJob : CorrJob {
  gocor::CorrGlobalShape s;
  void run(const gocor::Exec& ex) override {
    out = FreshF32(size_t(s.B) * s.Hq * s.Wq * s.H * s.W);
    gocor::corr_global(ref.data(), query.data(), out.data(), s, ex);
    require_finite_products(out, ref, query, s.B, s.C, size_t(s.H) * s.W, size_t(s.Hq) * s.Wq, 1.0);
  }
};

struct CorrLocalJob : CorrJob {
  gocor::CorrLocalShape s;
  void run(const gocor::Exec& ex) override {
    const size_t D = size_t(2 * s.R + 1) * (2 * s.R + 1);
    out = FreshF32(size_t(s.B) * D * s.H * s.W);
    gocor::corr_local(ref.data(), query.data(), out.data(), s, ex);
    const size_t P = size_t(s.H) * s.W;
    require_finite_products(out, ref, query, s.B, s.C, P, P, 1.0 / s.C);
  }
};

gocor::CorrGlobalShape read_global_shape(Napi::Env env, const Napi::Object& d) {
  gocor::CorrGlobalShape s{read_int(d, "B", 0), read_int(d, "C", 0),  read_int(d, "H", 0),
                           read_int(d, "W", 0), read_int(d, "Hq", 0), read_int(d, "Wq", 0)};
  count(env, {s.B, s.Hq, s.Wq, s.H, s.W}, "corrGlobal output");
  count(env, {s.B, s.C, s.H, s.W}, "reference");
  count(env, {s.B, s.C, s.Hq, s.Wq}, "query");
  return s;
}

gocor::CorrLocalShape read_local_shape(Napi::Env env, const Napi::Object& d) {
  gocor::CorrLocalShape s{read_int(d, "B", 0), read_int(d, "C", 0), read_int(d, "H", 0),
                          read_int(d, "W", 0), read_int(d, "R", -1)};
  if (s.R < 0 || s.R > 64) throw_invalid(env, "corrLocal: R must be between 0 and 64");
  count(env, {s.B, s.C, s.H, s.W}, "reference");
  return s;
}

// corrGlobal(reference (B,C,H,W), query (B,C,Hq,Wq), {B,C,H,W,Hq,Wq}, {device, threads})
//   -> job of {data (B, Hq*Wq, H, W), device}
Napi::Value CorrGlobal(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto job = std::make_unique<CorrGlobalJob>();
  const gocor::CorrGlobalShape s = job->s = read_global_shape(env, read_object(info[2], "dims"));
  job->ref = copy_fresh_f32(info[0], "reference", size_t(s.B) * s.C * s.H * s.W);
  job->query = copy_fresh_f32(info[1], "query", size_t(s.B) * s.C * s.Hq * s.Wq);
  read_exec(read_object(info[3], "exec"), *job);
  return job_handle(env, std::move(job));
}

size_t corr_global_bytes(Napi::Env env, const Napi::Object& dims, const Napi::Object&) {
  const gocor::CorrGlobalShape s = read_global_shape(env, dims);
  const size_t in = size_t(s.B) * s.C * (size_t(s.H) * s.W + size_t(s.Hq) * s.Wq);
  const size_t out = size_t(s.B) * s.Hq * s.Wq * s.H * s.W;
  return sizeof(float) * (in + out) + gocor::corr_global_work_bytes(s);
}

// corrLocal(reference, query (B,C,H,W), {B,C,H,W,R}, {device, threads})
//   -> job of {data (B, (2R+1)^2, H, W), device}
Napi::Value CorrLocal(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto job = std::make_unique<CorrLocalJob>();
  const gocor::CorrLocalShape s = job->s = read_local_shape(env, read_object(info[2], "dims"));
  const size_t n = size_t(s.B) * s.C * s.H * s.W;
  job->ref = copy_fresh_f32(info[0], "reference", n);
  job->query = copy_fresh_f32(info[1], "query", n);
  read_exec(read_object(info[3], "exec"), *job);
  return job_handle(env, std::move(job));
}

size_t corr_local_bytes(Napi::Env env, const Napi::Object& dims, const Napi::Object&) {
  const gocor::CorrLocalShape s = read_local_shape(env, dims);
  const size_t D = size_t(2 * s.R + 1) * (2 * s.R + 1), HW = size_t(s.H) * s.W;
  return sizeof(float) * (2 * size_t(s.B) * s.C * HW + size_t(s.B) * D * HW);
}

}  // namespace

void init_correlation(Napi::Env env, Napi::Object exports) {
  export_function(env, exports, "corrGlobal", CorrGlobal);
  export_function(env, exports, "corrLocal", CorrLocal);
  add_estimate(env, "corrGlobal", corr_global_bytes);
  add_estimate(env, "corrLocal", corr_local_bytes);
}

}  // namespace gocor_napi
