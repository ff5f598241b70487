// hpc-tf's Triton backend for format `onnx`: model.onnx run by ONNX Runtime inside tritonserver itself.
//
// Why: the tritonserver bundled in nvidia-pytriton has only the python backend, whose stub process costs a
// round trip of ~230 µs per request around a model ONNX Runtime runs in ~5 µs (BENCHMARKS.md figure 6).
// Named `onnxruntime`, the backend Triton's platform `onnxruntime_onnx` maps to, so the same model directory
// loads unchanged in a Triton that has NVIDIA's. What it does, and no more: CPU tensors of fixed-size types;
// the requests of one execution joined along the batch dimension into one ONNX Runtime run (dynamic batching)
// and split back; Triton's statistics reported per request and per run. hpc.serving.native_backend builds it
// (g++ with ONNX Runtime's C API header) against the onnxruntime library of the serving venv, which it
// loads with dlopen from HPCTF_ORT_LIBRARY, the path that build compiles in.
//
// Config read from Triton's JSON of config.pbtxt: max_batch_size, default_model_filename, and the parameters
// intra_op_thread_count / inter_op_thread_count (the names NVIDIA's backend uses; 0 = ONNX Runtime's default).

#include <dlfcn.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "onnxruntime_c_api.h"
#include "triton_backend_api.h"

#ifndef HPCTF_ORT_LIBRARY
#error "build with -DHPCTF_ORT_LIBRARY=\"/path/to/libonnxruntime.so...\" (hpc.serving.native_backend does)"
#endif

#define EXPORT extern "C" __attribute__((visibility("default")))

namespace {

const OrtApi* ort = nullptr;
OrtEnv* ort_env = nullptr;
std::once_flag ort_once;
std::string ort_load_error;

TRITONSERVER_Error* Fail(TRITONSERVER_Error_Code code, const std::string& msg) {
  return TRITONSERVER_ErrorNew(code, msg.c_str());
}

// An ONNX Runtime status as a Triton error (nullptr stays nullptr); the status is released.
TRITONSERVER_Error* FromOrt(OrtStatus* status, const char* what) {
  if (status == nullptr) return nullptr;
  std::string msg = std::string(what) + ": " + ort->GetErrorMessage(status);
  ort->ReleaseStatus(status);
  return Fail(TRITONSERVER_ERROR_INTERNAL, msg);
}

// A status nothing can be done about (freeing memory failed): released, not reported.
void Released(OrtStatus* status) {
  if (status != nullptr) ort->ReleaseStatus(status);
}

#define RETURN_IF_ERROR(expr)                 \
  do {                                        \
    TRITONSERVER_Error* err__ = (expr);       \
    if (err__ != nullptr) return err__;       \
  } while (false)

void LoadOrt() {
  void* lib = dlopen(HPCTF_ORT_LIBRARY, RTLD_NOW | RTLD_LOCAL);
  if (lib == nullptr) {
    ort_load_error = std::string("cannot load ONNX Runtime: ") + dlerror();
    return;
  }
  using GetApiBase = const OrtApiBase* (*)();
  auto get_api_base = reinterpret_cast<GetApiBase>(dlsym(lib, "OrtGetApiBase"));
  const OrtApi* api = get_api_base == nullptr ? nullptr : get_api_base()->GetApi(ORT_API_VERSION);
  if (api == nullptr) {
    ort_load_error = std::string(HPCTF_ORT_LIBRARY) + " has no ONNX Runtime C API version " +
                     std::to_string(ORT_API_VERSION) + " (rebuild: remove hpc-tf's backend cache)";
    return;
  }
  OrtStatus* status = api->CreateEnv(ORT_LOGGING_LEVEL_WARNING, "hpc-tf", &ort_env);
  if (status != nullptr) {
    ort_load_error = std::string("ONNX Runtime environment: ") + api->GetErrorMessage(status);
    api->ReleaseStatus(status);
    return;
  }
  ort = api;
}

// The value after "key": in Triton's compact JSON of the model config (each key read here occurs once).
std::string JsonValue(const std::string& json, const std::string& key) {
  size_t at = json.find("\"" + key + "\":");
  if (at == std::string::npos) return "";
  at += key.size() + 3;
  if (json.compare(at, 1, "{") == 0) {  // a parameter: {"string_value":"..."}
    at = json.find("\"string_value\":", at);
    if (at == std::string::npos) return "";
    at += 15;
  }
  if (json.compare(at, 1, "\"") == 0) return json.substr(at + 1, json.find('"', at + 1) - at - 1);
  size_t end = json.find_first_of(",}", at);
  return json.substr(at, end - at);
}

int64_t JsonInt(const std::string& json, const std::string& key, int64_t fallback) {
  std::string value = JsonValue(json, key);
  if (value.empty()) return fallback;
  try {
    return std::stoll(value);
  } catch (const std::exception&) {
    return fallback;
  }
}

struct TypeMap {
  TRITONSERVER_DataType triton;
  ONNXTensorElementDataType onnx;
  size_t bytes;
};
const TypeMap kTypes[] = {
    {TRITONSERVER_TYPE_BOOL, ONNX_TENSOR_ELEMENT_DATA_TYPE_BOOL, 1},
    {TRITONSERVER_TYPE_UINT8, ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8, 1},
    {TRITONSERVER_TYPE_UINT16, ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT16, 2},
    {TRITONSERVER_TYPE_UINT32, ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT32, 4},
    {TRITONSERVER_TYPE_UINT64, ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT64, 8},
    {TRITONSERVER_TYPE_INT8, ONNX_TENSOR_ELEMENT_DATA_TYPE_INT8, 1},
    {TRITONSERVER_TYPE_INT16, ONNX_TENSOR_ELEMENT_DATA_TYPE_INT16, 2},
    {TRITONSERVER_TYPE_INT32, ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32, 4},
    {TRITONSERVER_TYPE_INT64, ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64, 8},
    {TRITONSERVER_TYPE_FP16, ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16, 2},
    {TRITONSERVER_TYPE_FP32, ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT, 4},
    {TRITONSERVER_TYPE_FP64, ONNX_TENSOR_ELEMENT_DATA_TYPE_DOUBLE, 8},
    {TRITONSERVER_TYPE_BF16, ONNX_TENSOR_ELEMENT_DATA_TYPE_BFLOAT16, 2},
};

const TypeMap* ByOnnx(ONNXTensorElementDataType type) {
  for (const TypeMap& t : kTypes) {
    if (t.onnx == type) return &t;
  }
  return nullptr;
}

uint64_t NowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch()).count();
}

// One tensor the model takes or gives: its name, element type and ONNX shape (-1: any size).
struct TensorInfo {
  std::string name;
  const TypeMap* type;
  std::vector<int64_t> dims;
};

struct ModelState {
  std::string name;
  std::string path;  // <repository>/<model>/<version>/<default_model_filename>
  int64_t max_batch_size = 0;
  int intra_threads = 0;
  int inter_threads = 0;
};

struct InstanceState {
  ModelState* model;
  OrtSession* session = nullptr;
  OrtMemoryInfo* cpu = nullptr;
  std::vector<TensorInfo> inputs, outputs;

  ~InstanceState() {
    if (session != nullptr) ort->ReleaseSession(session);
    if (cpu != nullptr) ort->ReleaseMemoryInfo(cpu);
  }
};

TRITONSERVER_Error* ReadTensors(OrtSession* session, bool outputs, std::vector<TensorInfo>* into) {
  OrtAllocator* allocator;
  size_t count;
  RETURN_IF_ERROR(FromOrt(ort->GetAllocatorWithDefaultOptions(&allocator), "allocator"));
  RETURN_IF_ERROR(FromOrt(outputs ? ort->SessionGetOutputCount(session, &count)
                                  : ort->SessionGetInputCount(session, &count), "tensor count"));
  for (size_t i = 0; i < count; ++i) {
    char* name;
    OrtTypeInfo* type_info;
    RETURN_IF_ERROR(FromOrt(outputs ? ort->SessionGetOutputName(session, i, allocator, &name)
                                    : ort->SessionGetInputName(session, i, allocator, &name), "tensor name"));
    TensorInfo info{name, nullptr, {}};
    Released(ort->AllocatorFree(allocator, name));
    RETURN_IF_ERROR(FromOrt(outputs ? ort->SessionGetOutputTypeInfo(session, i, &type_info)
                                    : ort->SessionGetInputTypeInfo(session, i, &type_info), "tensor type"));
    std::unique_ptr<OrtTypeInfo, void (*)(OrtTypeInfo*)> owned(type_info, [](OrtTypeInfo* t) { ort->ReleaseTypeInfo(t); });
    const OrtTensorTypeAndShapeInfo* tensor;
    ONNXTensorElementDataType element;
    size_t rank;
    RETURN_IF_ERROR(FromOrt(ort->CastTypeInfoToTensorInfo(type_info, &tensor), "tensor info"));
    if (tensor == nullptr) return Fail(TRITONSERVER_ERROR_UNSUPPORTED, "'" + info.name + "' is not a tensor");
    RETURN_IF_ERROR(FromOrt(ort->GetTensorElementType(tensor, &element), "element type"));
    RETURN_IF_ERROR(FromOrt(ort->GetDimensionsCount(tensor, &rank), "rank"));
    info.dims.resize(rank);
    RETURN_IF_ERROR(FromOrt(ort->GetDimensions(tensor, info.dims.data(), rank), "dimensions"));
    info.type = ByOnnx(element);
    if (info.type == nullptr) {
      return Fail(TRITONSERVER_ERROR_UNSUPPORTED, "tensor '" + info.name + "' has ONNX element type " +
                  std::to_string(element) + ", which hpc-tf's onnxruntime backend does not serve (strings, "
                  "complex and 8-bit floats): serve this model with --format python");
    }
    into->push_back(std::move(info));
  }
  return nullptr;
}

// A request's input as one contiguous CPU buffer: Triton's own when it is one buffer, else gathered.
struct Input {
  const char* data = nullptr;
  uint64_t bytes = 0;
  std::vector<int64_t> shape;
  std::vector<char> gathered;
};

TRITONSERVER_Error* ReadInput(TRITONBACKEND_Request* request, const TensorInfo& info, Input* input) {
  TRITONBACKEND_Input* handle;
  TRITONSERVER_DataType datatype;
  const int64_t* shape;
  uint32_t rank, buffers;
  RETURN_IF_ERROR(TRITONBACKEND_RequestInput(request, info.name.c_str(), &handle));
  RETURN_IF_ERROR(TRITONBACKEND_InputProperties(handle, nullptr, &datatype, &shape, &rank, &input->bytes, &buffers));
  if (datatype != info.type->triton) {
    return Fail(TRITONSERVER_ERROR_INVALID_ARG, "input '" + info.name + "' has the wrong data type");
  }
  input->shape.assign(shape, shape + rank);
  for (uint32_t b = 0; b < buffers; ++b) {
    const void* data;
    uint64_t size;
    TRITONSERVER_MemoryType memory;
    int64_t memory_id;
    RETURN_IF_ERROR(TRITONBACKEND_InputBuffer(handle, b, &data, &size, &memory, &memory_id));
    if (memory == TRITONSERVER_MEMORY_GPU) {
      return Fail(TRITONSERVER_ERROR_UNSUPPORTED, "input '" + info.name + "' is in GPU memory; this backend is CPU only");
    }
    if (buffers == 1) {
      input->data = static_cast<const char*>(data);
    } else {
      input->gathered.insert(input->gathered.end(), static_cast<const char*>(data),
                             static_cast<const char*>(data) + size);
    }
  }
  if (buffers != 1) input->data = input->gathered.data();
  return nullptr;
}

// One ONNX Runtime run: `inputs[i]` feeds model input i. Outputs are owned by the caller (ReleaseValue).
TRITONSERVER_Error* Run(InstanceState* state, const std::vector<Input>& inputs, std::vector<OrtValue*>* outputs) {
  std::vector<OrtValue*> values;
  std::vector<const char*> in_names, out_names;
  TRITONSERVER_Error* err = nullptr;
  for (size_t i = 0; i < inputs.size() && err == nullptr; ++i) {
    const TensorInfo& info = state->inputs[i];
    OrtValue* value = nullptr;
    // ONNX Runtime reads inputs only: Triton's buffer is used in place, not copied
    err = FromOrt(ort->CreateTensorWithDataAsOrtValue(state->cpu, const_cast<char*>(inputs[i].data), inputs[i].bytes,
                                                      inputs[i].shape.data(), inputs[i].shape.size(),
                                                      info.type->onnx, &value), info.name.c_str());
    values.push_back(value);
    in_names.push_back(info.name.c_str());
  }
  for (const TensorInfo& info : state->outputs) out_names.push_back(info.name.c_str());
  outputs->assign(out_names.size(), nullptr);
  if (err == nullptr) {
    err = FromOrt(ort->Run(state->session, nullptr, in_names.data(), values.data(), values.size(), out_names.data(),
                           out_names.size(), outputs->data()), "ONNX Runtime run");
  }
  for (OrtValue* value : values) {
    if (value != nullptr) ort->ReleaseValue(value);
  }
  return err;
}

// Log an error nothing more can be done about (a failed send, a statistic not recorded), and free it.
void Drop(TRITONSERVER_Error* err) {
  if (err == nullptr) return;
  TRITONSERVER_LogMessage(TRITONSERVER_LOG_ERROR, __FILE__, __LINE__, TRITONSERVER_ErrorMessage(err));
  TRITONSERVER_ErrorDelete(err);
}

// Send `response` as the request's final one, carrying `err` (nullptr: success); frees `err`, which
// ResponseSend does not take. True when the client got a successful response.
bool Send(TRITONBACKEND_Response* response, TRITONSERVER_Error* err) {
  TRITONSERVER_Error* sent = TRITONBACKEND_ResponseSend(response, TRITONSERVER_RESPONSE_COMPLETE_FINAL, err);
  bool ok = err == nullptr && sent == nullptr;
  if (err != nullptr) TRITONSERVER_ErrorDelete(err);
  Drop(sent);
  return ok;
}

// Answer `request` with `err` (freed here).
void SendError(TRITONBACKEND_Request* request, TRITONSERVER_Error* err) {
  TRITONBACKEND_Response* response;
  TRITONSERVER_Error* made = TRITONBACKEND_ResponseNew(&response, request);
  if (made == nullptr) {
    Send(response, err);
  } else {  // nothing left to answer with: the client's own timeout ends its wait
    Drop(made);
    Drop(err);
  }
}

// The part of one output a request gets: all of it (kWhole), or rows [first, first + rows) of a joined run of
// `total` rows, whose first dimension must be that batch.
constexpr int64_t kWhole = -1;

TRITONSERVER_Error* AddOutput(const TensorInfo& info, OrtValue* value, TRITONBACKEND_Response* response,
                              int64_t first, int64_t rows, int64_t total) {
  OrtTensorTypeAndShapeInfo* shape_info;
  size_t rank;
  RETURN_IF_ERROR(FromOrt(ort->GetTensorTypeAndShape(value, &shape_info), "output shape"));
  TRITONSERVER_Error* err = FromOrt(ort->GetDimensionsCount(shape_info, &rank), "output rank");
  std::vector<int64_t> shape(err == nullptr ? rank : 0);
  if (err == nullptr) err = FromOrt(ort->GetDimensions(shape_info, shape.data(), rank), "output dimensions");
  ort->ReleaseTensorTypeAndShapeInfo(shape_info);
  RETURN_IF_ERROR(err);
  uint64_t row_bytes = info.type->bytes;
  for (size_t d = 1; d < rank; ++d) row_bytes *= shape[d];
  uint64_t offset = 0, bytes = row_bytes * (rank > 0 ? shape[0] : 1);
  if (rows != kWhole) {
    if (rank == 0 || shape[0] != total) {
      return Fail(TRITONSERVER_ERROR_INTERNAL, "output '" + info.name + "' does not have the batch as its first "
                  "dimension, so the joined requests cannot be told apart (set max_batch_size: 0 in config.pbtxt)");
    }
    shape[0] = rows;
    offset = row_bytes * first;
    bytes = row_bytes * rows;
  }
  void* data;
  TRITONBACKEND_Output* output;
  void* buffer;
  TRITONSERVER_MemoryType memory = TRITONSERVER_MEMORY_CPU;
  int64_t memory_id = 0;
  RETURN_IF_ERROR(FromOrt(ort->GetTensorMutableData(value, &data), "output data"));
  RETURN_IF_ERROR(TRITONBACKEND_ResponseOutput(response, &output, info.name.c_str(), info.type->triton, shape.data(),
                                               static_cast<uint32_t>(shape.size())));
  RETURN_IF_ERROR(TRITONBACKEND_OutputBuffer(output, &buffer, bytes, &memory, &memory_id));
  if (memory == TRITONSERVER_MEMORY_GPU) {
    return Fail(TRITONSERVER_ERROR_UNSUPPORTED, "an output buffer in GPU memory; this backend is CPU only");
  }
  if (bytes > 0) std::memcpy(buffer, static_cast<char*>(data) + offset, bytes);
  return nullptr;
}

// Answer `request` with the outputs it asked for (see AddOutput for first, rows, total); true on success.
bool Respond(const InstanceState* state, TRITONBACKEND_Request* request, const std::vector<OrtValue*>& outputs,
             int64_t first, int64_t rows, int64_t total) {
  TRITONBACKEND_Response* response;
  TRITONSERVER_Error* made = TRITONBACKEND_ResponseNew(&response, request);
  if (made != nullptr) {
    Drop(made);
    return false;
  }
  uint32_t requested;
  TRITONSERVER_Error* err = TRITONBACKEND_RequestOutputCount(request, &requested);
  for (uint32_t r = 0; r < requested && err == nullptr; ++r) {
    const char* name;
    err = TRITONBACKEND_RequestOutputName(request, r, &name);
    if (err != nullptr) break;
    size_t o = 0;
    while (o < state->outputs.size() && state->outputs[o].name != name) ++o;
    err = o == state->outputs.size()
              ? Fail(TRITONSERVER_ERROR_INVALID_ARG, std::string("the model has no output '") + name + "'")
              : AddOutput(state->outputs[o], outputs[o], response, first, rows, total);
  }
  return Send(response, err);
}

// Rows of the batch dimension a request's inputs carry (all inputs agree), or an error.
TRITONSERVER_Error* BatchRows(const InstanceState* state, const std::vector<Input>& inputs, int64_t* rows) {
  *rows = inputs.empty() || inputs[0].shape.empty() ? -1 : inputs[0].shape[0];
  for (size_t i = 0; i < inputs.size(); ++i) {
    if (inputs[i].shape.empty() || inputs[i].shape[0] != *rows) {
      return Fail(TRITONSERVER_ERROR_INVALID_ARG, "input '" + state->inputs[i].name +
                  "' does not have the batch size of the others");
    }
  }
  return nullptr;
}

bool SameRowShape(const std::vector<Input>& a, const std::vector<Input>& b) {
  for (size_t i = 0; i < a.size(); ++i) {
    if (!std::equal(a[i].shape.begin() + 1, a[i].shape.end(), b[i].shape.begin() + 1, b[i].shape.end())) return false;
  }
  return true;
}

// ONNX Runtime's outputs of one run, released however the run's requests end.
struct RunOutputs {
  std::vector<OrtValue*> values;
  ~RunOutputs() {
    for (OrtValue* value : values) {
      if (value != nullptr) ort->ReleaseValue(value);
    }
  }
};

// With max_batch_size > 0 Triton sends batches of any size up to it: every tensor's first dimension must be free.
TRITONSERVER_Error* CheckBatchable(const ModelState& model, const std::vector<TensorInfo>& tensors) {
  for (const TensorInfo& info : tensors) {
    if (info.dims.empty() || info.dims[0] != -1) {
      return Fail(TRITONSERVER_ERROR_INVALID_ARG, "max_batch_size is " + std::to_string(model.max_batch_size) +
                  " but ONNX tensor '" + info.name + "' has no free first (batch) dimension: set max_batch_size: 0 "
                  "in config.pbtxt");
    }
  }
  return nullptr;
}

TRITONSERVER_Error* InitializeModel(TRITONBACKEND_Model* model) {
  std::call_once(ort_once, LoadOrt);
  if (ort == nullptr) return Fail(TRITONSERVER_ERROR_UNAVAILABLE, ort_load_error);
  auto state = std::make_unique<ModelState>();
  const char* name;
  const char* location;
  uint64_t version;
  TRITONBACKEND_ArtifactType artifact;
  TRITONSERVER_Message* message;
  const char* json;
  size_t json_size;
  RETURN_IF_ERROR(TRITONBACKEND_ModelName(model, &name));
  RETURN_IF_ERROR(TRITONBACKEND_ModelVersion(model, &version));
  RETURN_IF_ERROR(TRITONBACKEND_ModelRepository(model, &artifact, &location));
  RETURN_IF_ERROR(TRITONBACKEND_ModelConfig(model, TRITONBACKEND_CONFIG_VERSION, &message));
  TRITONSERVER_Error* err = TRITONSERVER_MessageSerializeToJson(message, &json, &json_size);
  std::string config = err == nullptr ? std::string(json, json_size) : "";
  Drop(TRITONSERVER_MessageDelete(message));
  RETURN_IF_ERROR(err);
  std::string file = JsonValue(config, "default_model_filename");
  size_t parameters = config.find("\"parameters\":");  // the thread counts are looked up inside it only
  state->name = name;
  state->path = std::string(location) + "/" + std::to_string(version) + "/" + (file.empty() ? "model.onnx" : file);
  state->max_batch_size = JsonInt(config, "max_batch_size", 0);
  if (parameters != std::string::npos) {
    state->intra_threads = static_cast<int>(JsonInt(config.substr(parameters), "intra_op_thread_count", 0));
    state->inter_threads = static_cast<int>(JsonInt(config.substr(parameters), "inter_op_thread_count", 0));
  }
  RETURN_IF_ERROR(TRITONBACKEND_ModelSetState(model, state.release()));
  return nullptr;
}

TRITONSERVER_Error* InitializeInstance(TRITONBACKEND_ModelInstance* instance) {
  TRITONBACKEND_Model* model;
  void* model_state;
  RETURN_IF_ERROR(TRITONBACKEND_ModelInstanceModel(instance, &model));
  RETURN_IF_ERROR(TRITONBACKEND_ModelState(model, &model_state));
  auto state = std::make_unique<InstanceState>();
  state->model = static_cast<ModelState*>(model_state);
  OrtSessionOptions* options;
  RETURN_IF_ERROR(FromOrt(ort->CreateSessionOptions(&options), "session options"));
  std::unique_ptr<OrtSessionOptions, void (*)(OrtSessionOptions*)> owned(
      options, [](OrtSessionOptions* o) { ort->ReleaseSessionOptions(o); });
  RETURN_IF_ERROR(FromOrt(ort->SetIntraOpNumThreads(options, state->model->intra_threads), "threads"));
  RETURN_IF_ERROR(FromOrt(ort->SetInterOpNumThreads(options, state->model->inter_threads), "threads"));
  RETURN_IF_ERROR(FromOrt(ort->SetSessionExecutionMode(options, ORT_SEQUENTIAL), "execution mode"));
  RETURN_IF_ERROR(FromOrt(ort->CreateSession(ort_env, state->model->path.c_str(), options, &state->session),
                          ("loading " + state->model->path).c_str()));
  RETURN_IF_ERROR(FromOrt(ort->CreateCpuMemoryInfo(OrtArenaAllocator, OrtMemTypeDefault, &state->cpu), "memory info"));
  RETURN_IF_ERROR(ReadTensors(state->session, false, &state->inputs));
  RETURN_IF_ERROR(ReadTensors(state->session, true, &state->outputs));
  if (state->model->max_batch_size > 0) {
    RETURN_IF_ERROR(CheckBatchable(*state->model, state->inputs));
    RETURN_IF_ERROR(CheckBatchable(*state->model, state->outputs));
  }
  std::string loaded = "hpc-tf onnxruntime backend: " + state->model->name + " loaded from " + state->model->path;
  Drop(TRITONSERVER_LogMessage(TRITONSERVER_LOG_INFO, __FILE__, __LINE__, loaded.c_str()));
  RETURN_IF_ERROR(TRITONBACKEND_ModelInstanceSetState(instance, state.release()));
  return nullptr;
}

// Answer the requests Triton handed over (the dynamic batcher's gathering, or one); `answered[k]` is set for
// each request answered, with its statistics reported. Requests whose rows have the same shape beyond the
// batch dimension run as one batch, split back afterwards.
TRITONSERVER_Error* ExecuteRequests(TRITONBACKEND_ModelInstance* instance, TRITONBACKEND_Request** requests,
                                    uint32_t count, std::vector<bool>* answered) {
  uint64_t exec_start = NowNs();
  void* raw;
  RETURN_IF_ERROR(TRITONBACKEND_ModelInstanceState(instance, &raw));
  auto* state = static_cast<InstanceState*>(raw);
  const bool batched = state->model->max_batch_size > 0;
  std::vector<std::vector<Input>> inputs(count, std::vector<Input>(state->inputs.size()));
  std::vector<int64_t> rows(count, kWhole);
  for (uint32_t k = 0; k < count; ++k) {
    TRITONSERVER_Error* err = nullptr;
    for (size_t i = 0; i < state->inputs.size() && err == nullptr; ++i) {
      err = ReadInput(requests[k], state->inputs[i], &inputs[k][i]);
    }
    if (err == nullptr && batched) err = BatchRows(state, inputs[k], &rows[k]);
    if (err != nullptr) {
      SendError(requests[k], err);
      (*answered)[k] = true;
      Drop(TRITONBACKEND_ModelInstanceReportStatistics(instance, requests[k], false, exec_start, exec_start,
                                                       exec_start, NowNs()));
    }
  }
  // the runs: a group of consecutive compatible requests joined (batched models), else one request each
  size_t r = 0;
  while (r < count) {
    if ((*answered)[r]) {
      ++r;
      continue;
    }
    size_t end = r + 1;
    while (batched && end < count && !(*answered)[end] && SameRowShape(inputs[r], inputs[end])) ++end;
    const bool joined = end - r > 1;
    std::vector<Input> joined_inputs;
    int64_t total = 0;
    for (size_t k = r; k < end; ++k) total += rows[k];
    if (joined) {
      joined_inputs.resize(state->inputs.size());
      for (size_t i = 0; i < state->inputs.size(); ++i) {
        Input& into = joined_inputs[i];
        into.shape = inputs[r][i].shape;
        into.shape[0] = total;
        for (size_t k = r; k < end; ++k) {
          into.gathered.insert(into.gathered.end(), inputs[k][i].data, inputs[k][i].data + inputs[k][i].bytes);
        }
        into.data = into.gathered.data();
        into.bytes = into.gathered.size();
      }
    }
    uint64_t compute_start = NowNs();
    RunOutputs outputs;
    TRITONSERVER_Error* run_err = Run(state, joined ? joined_inputs : inputs[r], &outputs.values);
    uint64_t compute_end = NowNs();
    int64_t first = 0;
    for (size_t k = r; k < end; ++k) {
      bool success = false;
      if (run_err == nullptr) {
        success = Respond(state, requests[k], outputs.values, first, joined ? rows[k] : kWhole, total);
      } else {
        SendError(requests[k], Fail(TRITONSERVER_ERROR_INTERNAL, TRITONSERVER_ErrorMessage(run_err)));
      }
      (*answered)[k] = true;
      first += rows[k];
      Drop(TRITONBACKEND_ModelInstanceReportStatistics(instance, requests[k], success, exec_start, compute_start,
                                                       compute_end, NowNs()));
    }
    if (run_err == nullptr) {
      Drop(TRITONBACKEND_ModelInstanceReportBatchStatistics(instance, batched ? total : 1, exec_start,
                                                            compute_start, compute_end, NowNs()));
    }
    if (run_err != nullptr) TRITONSERVER_ErrorDelete(run_err);
    r = end;
  }
  return nullptr;
}

// No C++ exception may reach tritonserver: it would end the server with every model it serves.
template <typename Body>
TRITONSERVER_Error* Guarded(Body body) {
  try {
    return body();
  } catch (const std::exception& e) {
    return Fail(TRITONSERVER_ERROR_INTERNAL, std::string("hpc-tf onnxruntime backend: ") + e.what());
  }
}

}  // namespace

EXPORT TRITONSERVER_Error* TRITONBACKEND_ModelInitialize(TRITONBACKEND_Model* model) {
  return Guarded([&] { return InitializeModel(model); });
}

EXPORT TRITONSERVER_Error* TRITONBACKEND_ModelFinalize(TRITONBACKEND_Model* model) {
  void* state;
  RETURN_IF_ERROR(TRITONBACKEND_ModelState(model, &state));
  delete static_cast<ModelState*>(state);
  return nullptr;
}

EXPORT TRITONSERVER_Error* TRITONBACKEND_ModelInstanceInitialize(TRITONBACKEND_ModelInstance* instance) {
  return Guarded([&] { return InitializeInstance(instance); });
}

EXPORT TRITONSERVER_Error* TRITONBACKEND_ModelInstanceFinalize(TRITONBACKEND_ModelInstance* instance) {
  void* state;
  RETURN_IF_ERROR(TRITONBACKEND_ModelInstanceState(instance, &state));
  delete static_cast<InstanceState*>(state);
  return nullptr;
}

// Every request is answered and released here, whatever happens, so this returns no error (an error would
// hand the requests back to Triton).
EXPORT TRITONSERVER_Error* TRITONBACKEND_ModelInstanceExecute(TRITONBACKEND_ModelInstance* instance,
                                                              TRITONBACKEND_Request** requests, uint32_t count) {
  std::vector<bool> answered(count, false);
  TRITONSERVER_Error* err = Guarded([&] { return ExecuteRequests(instance, requests, count, &answered); });
  for (uint32_t k = 0; k < count; ++k) {
    if (!answered[k]) {
      SendError(requests[k], Fail(TRITONSERVER_ERROR_INTERNAL, err != nullptr ? TRITONSERVER_ErrorMessage(err)
                                                                              : "the request was not run"));
    }
    Drop(TRITONBACKEND_RequestRelease(requests[k], TRITONSERVER_REQUEST_RELEASE_ALL));
  }
  if (err != nullptr) TRITONSERVER_ErrorDelete(err);
  return nullptr;
}
