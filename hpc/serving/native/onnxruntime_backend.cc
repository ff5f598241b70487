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

// Send request's share of the outputs: rows [first, first + rows) of each (all of it when rows < 0).
TRITONSERVER_Error* Respond(InstanceState* state, TRITONBACKEND_Request* request, const std::vector<OrtValue*>& outputs,
                            int64_t first, int64_t rows) {
  TRITONBACKEND_Response* response;
  uint32_t requested;
  RETURN_IF_ERROR(TRITONBACKEND_ResponseNew(&response, request));
  TRITONSERVER_Error* err = TRITONBACKEND_RequestOutputCount(request, &requested);
  for (uint32_t r = 0; r < requested && err == nullptr; ++r) {
    const char* name;
    err = TRITONBACKEND_RequestOutputName(request, r, &name);
    size_t o = 0;
    while (err == nullptr && o < state->outputs.size() && state->outputs[o].name != name) ++o;
    if (err != nullptr) break;
    if (o == state->outputs.size()) {
      err = Fail(TRITONSERVER_ERROR_INVALID_ARG, std::string("the model has no output '") + name + "'");
      break;
    }
    OrtTensorTypeAndShapeInfo* shape_info;
    size_t rank;
    err = FromOrt(ort->GetTensorTypeAndShape(outputs[o], &shape_info), "output shape");
    if (err != nullptr) break;
    err = FromOrt(ort->GetDimensionsCount(shape_info, &rank), "output rank");
    std::vector<int64_t> shape(err == nullptr ? rank : 0);
    if (err == nullptr) err = FromOrt(ort->GetDimensions(shape_info, shape.data(), rank), "output dimensions");
    ort->ReleaseTensorTypeAndShapeInfo(shape_info);
    if (err != nullptr) break;
    uint64_t row_bytes = state->outputs[o].type->bytes;
    for (size_t d = 1; d < rank; ++d) row_bytes *= shape[d];
    uint64_t offset = 0, bytes = row_bytes * (rank > 0 ? shape[0] : 1);
    if (rows >= 0) {
      if (rank == 0 || first + rows > shape[0]) {
        err = Fail(TRITONSERVER_ERROR_INTERNAL, "output '" + state->outputs[o].name + "' has fewer rows than the batch");
        break;
      }
      shape[0] = rows;
      offset = row_bytes * first;
      bytes = row_bytes * rows;
    }
    void* data;
    err = FromOrt(ort->GetTensorMutableData(outputs[o], &data), "output data");
    TRITONBACKEND_Output* output;
    void* buffer;
    TRITONSERVER_MemoryType memory = TRITONSERVER_MEMORY_CPU;
    int64_t memory_id = 0;
    if (err == nullptr) {
      err = TRITONBACKEND_ResponseOutput(response, &output, name, state->outputs[o].type->triton, shape.data(),
                                         static_cast<uint32_t>(shape.size()));
    }
    if (err == nullptr) err = TRITONBACKEND_OutputBuffer(output, &buffer, bytes, &memory, &memory_id);
    if (err == nullptr && memory == TRITONSERVER_MEMORY_GPU) {
      err = Fail(TRITONSERVER_ERROR_UNSUPPORTED, "an output buffer in GPU memory; this backend is CPU only");
    }
    if (err == nullptr) std::memcpy(buffer, static_cast<char*>(data) + offset, bytes);
  }
  return TRITONBACKEND_ResponseSend(response, TRITONSERVER_RESPONSE_COMPLETE_FINAL, err);
}

void SendError(TRITONBACKEND_Request* request, TRITONSERVER_Error* err) {
  TRITONBACKEND_Response* response;
  if (TRITONBACKEND_ResponseNew(&response, request) == nullptr) {
    TRITONBACKEND_ResponseSend(response, TRITONSERVER_RESPONSE_COMPLETE_FINAL, err);
  } else {
    TRITONSERVER_LogMessage(TRITONSERVER_LOG_ERROR, __FILE__, __LINE__, TRITONSERVER_ErrorMessage(err));
    TRITONSERVER_ErrorDelete(err);
  }
}

// Rows of the batch dimension a request's inputs carry (all inputs agree), or an error.
TRITONSERVER_Error* BatchRows(const InstanceState* state, const std::vector<Input>& inputs, int64_t* rows) {
  *rows = inputs[0].shape.empty() ? -1 : inputs[0].shape[0];
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

}  // namespace

EXPORT TRITONSERVER_Error* TRITONBACKEND_ModelInitialize(TRITONBACKEND_Model* model) {
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
  TRITONSERVER_MessageDelete(message);
  RETURN_IF_ERROR(err);
  std::string file = JsonValue(config, "default_model_filename");
  state->name = name;
  state->path = std::string(location) + "/" + std::to_string(version) + "/" + (file.empty() ? "model.onnx" : file);
  state->max_batch_size = JsonInt(config, "max_batch_size", 0);
  state->intra_threads = static_cast<int>(JsonInt(config, "intra_op_thread_count", 0));
  state->inter_threads = static_cast<int>(JsonInt(config, "inter_op_thread_count", 0));
  RETURN_IF_ERROR(TRITONBACKEND_ModelSetState(model, state.release()));
  return nullptr;
}

EXPORT TRITONSERVER_Error* TRITONBACKEND_ModelFinalize(TRITONBACKEND_Model* model) {
  void* state;
  RETURN_IF_ERROR(TRITONBACKEND_ModelState(model, &state));
  delete static_cast<ModelState*>(state);
  return nullptr;
}

EXPORT TRITONSERVER_Error* TRITONBACKEND_ModelInstanceInitialize(TRITONBACKEND_ModelInstance* instance) {
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
  std::string loaded = "hpc-tf onnxruntime backend: " + state->model->name + " loaded from " + state->model->path;
  TRITONSERVER_LogMessage(TRITONSERVER_LOG_INFO, __FILE__, __LINE__, loaded.c_str());
  RETURN_IF_ERROR(TRITONBACKEND_ModelInstanceSetState(instance, state.release()));
  return nullptr;
}

EXPORT TRITONSERVER_Error* TRITONBACKEND_ModelInstanceFinalize(TRITONBACKEND_ModelInstance* instance) {
  void* state;
  RETURN_IF_ERROR(TRITONBACKEND_ModelInstanceState(instance, &state));
  delete static_cast<InstanceState*>(state);
  return nullptr;
}

// Triton hands over the requests the dynamic batcher gathered (one without batching). Requests whose rows
// have the same shape beyond the batch dimension run as one batch; each gets its own response and statistics.
// Every request is answered and released here, so this returns no error (which would hand them back to Triton).
EXPORT TRITONSERVER_Error* TRITONBACKEND_ModelInstanceExecute(TRITONBACKEND_ModelInstance* instance,
                                                              TRITONBACKEND_Request** requests, uint32_t count) {
  uint64_t exec_start = NowNs();
  void* raw;
  TRITONSERVER_Error* err = TRITONBACKEND_ModelInstanceState(instance, &raw);
  if (err != nullptr) return err;
  auto* state = static_cast<InstanceState*>(raw);
  const bool batched = state->model->max_batch_size > 0;
  std::vector<std::vector<Input>> inputs(count, std::vector<Input>(state->inputs.size()));
  std::vector<int64_t> rows(count, -1);
  std::vector<bool> ok(count, true);
  for (uint32_t r = 0; r < count; ++r) {
    for (size_t i = 0; i < state->inputs.size() && err == nullptr; ++i) {
      err = ReadInput(requests[r], state->inputs[i], &inputs[r][i]);
    }
    if (err == nullptr && batched) err = BatchRows(state, inputs[r], &rows[r]);
    if (err != nullptr) {
      SendError(requests[r], err);
      ok[r] = false;
      err = nullptr;
    }
  }
  // the runs: a group of consecutive compatible requests joined (batched models), else one request each
  size_t r = 0;
  while (r < count) {
    if (!ok[r]) { ++r; continue; }
    size_t end = r + 1;
    while (batched && end < count && ok[end] && SameRowShape(inputs[r], inputs[end])) ++end;
    std::vector<Input> joined_storage;
    const std::vector<Input>* feed = &inputs[r];
    int64_t total = rows[r];
    if (end - r > 1) {
      joined_storage.resize(state->inputs.size());
      for (size_t i = 0; i < state->inputs.size(); ++i) {
        Input& joined = joined_storage[i];
        joined.shape = inputs[r][i].shape;
        for (size_t k = r; k < end; ++k) {
          joined.gathered.insert(joined.gathered.end(), inputs[k][i].data, inputs[k][i].data + inputs[k][i].bytes);
        }
        joined.data = joined.gathered.data();
        joined.bytes = joined.gathered.size();
      }
      total = 0;
      for (size_t k = r; k < end; ++k) total += rows[k];
      for (Input& joined : joined_storage) joined.shape[0] = total;
      feed = &joined_storage;
    }
    uint64_t compute_start = NowNs();
    std::vector<OrtValue*> outputs;
    TRITONSERVER_Error* run_err = Run(state, *feed, &outputs);
    uint64_t compute_end = NowNs();
    int64_t first = 0;
    for (size_t k = r; k < end; ++k) {
      bool success = run_err == nullptr;
      if (success) {
        TRITONSERVER_Error* sent = Respond(state, requests[k], outputs, first, end - r > 1 ? rows[k] : -1);
        success = sent == nullptr;
        if (sent != nullptr) TRITONSERVER_ErrorDelete(sent);
      } else {
        SendError(requests[k], TRITONSERVER_ErrorNew(TRITONSERVER_ERROR_INTERNAL, TRITONSERVER_ErrorMessage(run_err)));
      }
      first += rows[k];
      TRITONBACKEND_ModelInstanceReportStatistics(instance, requests[k], success, exec_start, compute_start,
                                                  compute_end, NowNs());
    }
    if (run_err == nullptr) {
      TRITONBACKEND_ModelInstanceReportBatchStatistics(instance, batched ? total : 1, exec_start, compute_start,
                                                       compute_end, NowNs());
    } else {
      TRITONSERVER_ErrorDelete(run_err);
    }
    for (OrtValue* value : outputs) {
      if (value != nullptr) ort->ReleaseValue(value);
    }
    r = end;
  }
  for (uint32_t k = 0; k < count; ++k) {
    if (!ok[k]) {
      TRITONBACKEND_ModelInstanceReportStatistics(instance, requests[k], false, exec_start, exec_start, exec_start,
                                                  NowNs());
    }
    TRITONBACKEND_RequestRelease(requests[k], TRITONSERVER_REQUEST_RELEASE_ALL);
  }
  return nullptr;
}
