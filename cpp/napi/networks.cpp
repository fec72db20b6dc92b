// The official networks: the expected tensors of a model, loading (networkCreate) and the forward
// job (networkForward). A loaded network is an External owning a shared_ptr, so a forward in flight
// keeps it alive even when JS drops its handle.
#include "networks.h"

#include <memory>
#include <string>
#include <vector>

#include "dispatch.h"
#include "worker.h"

namespace gocor_napi {
namespace {

using NetPtr = std::shared_ptr<const gocor::Network>;

gocor::NetworkModel read_model(Napi::Env env, const Napi::Value& v) {
  gocor::NetworkModel m;
  if (!v.IsString() || !gocor::parse_network_model(v.As<Napi::String>().Utf8Value(), &m)) {
    throw_invalid(env, "model must be one of PWCNet, PWCNet_GOCor, GLUNet, GLUNet_GOCor");
  }
  return m;
}

NetPtr read_network(Napi::Env env, const Napi::Value& v) {
  if (!v.IsExternal()) throw_invalid(env, "network: expected a loaded network handle");
  return *v.As<Napi::External<NetPtr>>().Data();
}

// networkTensors(model) -> [[name, shape], ...] in the official state_dict order.
Napi::Value NetworkTensors(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const gocor::TensorList list = gocor::network_tensors(read_model(env, info[0]));
  Napi::Array out = Napi::Array::New(env, list.size());
  for (size_t i = 0; i < list.size(); ++i) {
    Napi::Array shape = Napi::Array::New(env, list[i].second.size());
    for (size_t j = 0; j < list[i].second.size(); ++j)
      shape.Set(uint32_t(j), double(list[i].second[j]));
    Napi::Array e = Napi::Array::New(env, 2);
    e.Set(0u, Napi::String::New(env, list[i].first));
    e.Set(1u, shape);
    out.Set(uint32_t(i), e);
  }
  return out;
}

// networkCreate(model, names[], shapes[][], data Float32Array[], {numIterGlobal, numIterLocal})
//   -> handle. Throws ERR_GOCOR_INVALID_ARG naming a missing, unexpected or mis-shaped tensor
//   (lib/networks.ts checks the same first and reports ERR_GOCOR_PARAMS).
Napi::Value NetworkCreate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const gocor::NetworkModel model = read_model(env, info[0]);
  if (!info[1].IsArray() || !info[2].IsArray() || !info[3].IsArray())
    throw_invalid(env, "networkCreate: names, shapes and data must be arrays");
  Napi::Array names = info[1].As<Napi::Array>(), shapes = info[2].As<Napi::Array>(),
              data = info[3].As<Napi::Array>();
  if (names.Length() != shapes.Length() || names.Length() != data.Length())
    throw_invalid(env, "networkCreate: names, shapes and data must have the same length");
  gocor::TensorMap map;
  for (uint32_t i = 0; i < names.Length(); ++i) {
    if (!names.Get(i).IsString() || !shapes.Get(i).IsArray())
      throw_invalid(env, "networkCreate: bad tensor entry");
    const std::string name = names.Get(i).As<Napi::String>().Utf8Value();
    Napi::Array s = shapes.Get(i).As<Napi::Array>();
    gocor::NamedTensor t;
    for (uint32_t j = 0; j < s.Length(); ++j) {
      if (!s.Get(j).IsNumber())
        throw_invalid(env, "networkCreate: shape of " + name + " is not a list of numbers");
      t.shape.push_back(s.Get(j).As<Napi::Number>().Int64Value());
    }
    // Borrowed, not copied (create runs during this call and copies what it keeps): a load
    // holds the checkpoint once, in the caller's arrays.
    const Napi::Value d = data.Get(i);
    if (!d.IsTypedArray() || d.As<Napi::TypedArray>().TypedArrayType() != napi_float32_array)
      throw_invalid(env, "Expected Float32Array for " + name);
    const Napi::Float32Array a = d.As<Napi::Float32Array>();
    t.data = a.Data();
    t.size = t.data != nullptr ? a.ElementLength() : 0;
    map.emplace(name, std::move(t));
  }
  Napi::Object o = read_object(info[4], "options");
  gocor::NetworkOptions opt;
  opt.num_iter_global = read_int(o, "numIterGlobal", opt.num_iter_global);
  opt.num_iter_local = read_int(o, "numIterLocal", opt.num_iter_local);
  NetPtr net(gocor::Network::create(model, map, opt));
  return Napi::External<NetPtr>::New(env, new NetPtr(std::move(net)),
                                     [](Napi::Env, NetPtr* p) { delete p; });
}

struct ForwardJob : Job {
  NetPtr net;
  std::vector<std::vector<float>> inputs;
  int B = 0, H = 0, W = 0, H256 = 0, W256 = 0;
  gocor::NetworkOutput out;

  void run(const gocor::Exec& ex) override {
    std::vector<const float*> ptrs;
    for (const auto& v : inputs) ptrs.push_back(v.data());
    out = net->forward(ptrs, B, H, W, H256, W256, ex);
  }

  napi_value list(Out& o, std::vector<gocor::FlowEstimate>& l) {
    napi_value arr = o.array(l.size());
    for (size_t i = 0; i < l.size(); ++i) {
      napi_value e = o.object();
      o.set(e, "h", double(l[i].h));
      o.set(e, "w", double(l[i].w));
      o.set(e, "data", o.f32(std::move(l[i].data)));
      o.set(arr, uint32_t(i), e);
    }
    return arr;
  }

  napi_value result(Out& o) override {
    napi_value r = o.object();
    o.set(r, "estimates", list(o, out.estimates));
    if (gocor::is_glu(net->model())) o.set(r, "estimates256", list(o, out.estimates256));
    return r;
  }
};

// networkForward(handle, inputs Float32Array[], {B, H, W, H256, W256}, {device, threads})
//   -> job of {estimates: [{h, w, data (B,2,h,w)}], estimates256? (GLU), device}
Napi::Value NetworkForward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto job = std::make_unique<ForwardJob>();
  job->net = read_network(env, info[0]);
  Napi::Object d = read_object(info[2], "dims");
  job->B = read_int(d, "B", 0);
  job->H = read_int(d, "H", 0);
  job->W = read_int(d, "W", 0);
  const bool glu = gocor::is_glu(job->net->model());
  job->H256 = glu ? read_int(d, "H256", 0) : 1;
  job->W256 = glu ? read_int(d, "W256", 0) : 1;
  const size_t n = count(env, {job->B, 3, job->H, job->W}, "images");
  const size_t n256 = count(env, {job->B, 3, job->H256, job->W256}, "256 images");
  if (!info[1].IsArray()) throw_invalid(env, "networkForward: inputs must be an array");
  Napi::Array in = info[1].As<Napi::Array>();
  if (in.Length() != (glu ? 4u : 2u)) throw_invalid(env, "networkForward: wrong number of inputs");
  for (uint32_t i = 0; i < in.Length(); ++i)
    job->inputs.push_back(copy_f32(in.Get(i), "input", i < 2 ? n : n256));
  read_exec(read_object(info[3], "options"), *job);
  job->has_cuda = gocor::nn::any_layer_on_cuda();
  return job_handle(env, std::move(job));
}

struct MatchJob : Job {
  NetPtr net;
  std::vector<float> a, b;
  int C = 0, Ha = 0, Wa = 0, Hb = 0, Wb = 0, Ho = 0, Wo = 0;
  F32Buffer flow;
  void run(const gocor::Exec& ex) override {
    flow = gocor::network_match(*net, a.data(), C, Ha, Wa, b.data(), Hb, Wb, Ho, Wo, ex);
  }
  napi_value result(Out& o) override {
    napi_value r = o.object();
    o.set(r, "data", o.f32(std::move(flow)));
    o.set(r, "width", double(Wo));
    o.set(r, "height", double(Ho));
    return r;
  }
};

// networkMatch(handle, a, {C,H,W}, b, {C,H,W}, {H, W} output grid, {device, threads})
//   -> job of {data (2, H, W), width, height, device}: flow on a's grid into b.
Napi::Value NetworkMatch(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto job = std::make_unique<MatchJob>();
  job->net = read_network(env, info[0]);
  Napi::Object da = read_object(info[2], "dimsA"), db = read_object(info[4], "dimsB"),
               dout = read_object(info[5], "outputShape");
  job->C = read_int(da, "C", 0);
  job->Ha = read_int(da, "H", 0);
  job->Wa = read_int(da, "W", 0);
  job->Hb = read_int(db, "H", 0);
  job->Wb = read_int(db, "W", 0);
  job->Ho = read_int(dout, "H", 0);
  job->Wo = read_int(dout, "W", 0);
  if (read_int(db, "C", 0) != job->C)
    throw_invalid(env, "networkMatch: a and b must have the same channels");
  job->a = copy_f32(info[1], "a", count(env, {job->C, job->Ha, job->Wa}, "a"));
  job->b = copy_f32(info[3], "b", count(env, {job->C, job->Hb, job->Wb}, "b"));
  count(env, {job->Ho, job->Wo}, "outputShape");
  read_exec(read_object(info[6], "options"), *job);
  job->has_cuda = gocor::nn::any_layer_on_cuda();
  return job_handle(env, std::move(job));
}

// networkDevice({device, threads}) -> 'cpu' | 'cuda': the device a network's layers run on,
// resolved once when it is loaded (dispatch's resolve_device, with the layers' CUDA route): 'cuda'
// without a usable GPU throws ERR_GOCOR_CUDA_UNAVAILABLE; 'auto' is 'cpu' there, and stays 'cpu' on
// a GPU until a layer's twin has passed GPU parity.
Napi::Value NetworkDevice(const Napi::CallbackInfo& info) {
  MatchJob probe;  // any job: read_exec parses the options as for every call
  read_exec(read_object(info[0], "options"), probe);
  const gocor::Device d = gocor::resolve_device(probe.exec.device, gocor::nn::any_layer_on_cuda());
  return Napi::String::New(info.Env(), d == gocor::Device::Cuda ? "cuda" : "cpu");
}

// networkWorkBytes(handle, H, W) -> bytes one batch element's forward allocates (memory limit).
Napi::Value NetworkWorkBytes(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  NetPtr net = read_network(env, info[0]);
  if (!info[1].IsNumber() || !info[2].IsNumber())
    throw_invalid(env, "networkWorkBytes: H and W must be numbers");
  return Napi::Number::New(env, double(net->work_bytes(info[1].As<Napi::Number>().Int32Value(),
                                                       info[2].As<Napi::Number>().Int32Value())));
}

// networkRetainedBytes(handle) -> bytes the loaded network keeps (Network::retained_bytes).
Napi::Value NetworkRetainedBytes(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), double(read_network(info.Env(), info[0])->retained_bytes()));
}

}  // namespace

void init_networks(Napi::Env env, Napi::Object exports) {
  export_function(env, exports, "networkTensors", NetworkTensors);
  export_function(env, exports, "networkCreate", NetworkCreate);
  export_function(env, exports, "networkForward", NetworkForward);
  export_function(env, exports, "networkWorkBytes", NetworkWorkBytes);
  export_function(env, exports, "networkRetainedBytes", NetworkRetainedBytes);
  export_function(env, exports, "networkMatch", NetworkMatch);
  export_function(env, exports, "networkDevice", NetworkDevice);
}

}  // namespace gocor_napi
