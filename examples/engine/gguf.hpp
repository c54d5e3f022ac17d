// GGUF (version 3) reader for the reference host: metadata, tensor directory and dequantisation
// of the tensor types the host needs. The file is memory-mapped read-only; every length, count
// and offset read from it is checked against the file size, so a corrupt file gives a gguf_error
// instead of a crash.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

namespace kvhost {

struct gguf_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// ggml tensor types (ids as in ggml.h). Only some can be dequantised; see gguf_file::dequantize.
enum class ggml_type : uint32_t {
  F32 = 0,
  F16 = 1,
  Q4_0 = 2,
  Q4_1 = 3,
  Q5_0 = 6,
  Q5_1 = 7,
  Q8_0 = 8,
  Q8_1 = 9,
  Q2_K = 10,
  Q3_K = 11,
  Q4_K = 12,
  Q5_K = 13,
  Q6_K = 14,
  Q8_K = 15,
  IQ4_NL = 20,
  IQ4_XS = 23,
  I8 = 24,
  I16 = 25,
  I32 = 26,
  I64 = 27,
  F64 = 28,
  BF16 = 30,
};

// "Q4_1", or "type#N" for an id this reader does not know.
std::string to_string(ggml_type t);

// Metadata value types (ids as in the GGUF spec).
enum class gguf_value_type : uint32_t {
  UINT8 = 0,
  INT8 = 1,
  UINT16 = 2,
  INT16 = 3,
  UINT32 = 4,
  INT32 = 5,
  FLOAT32 = 6,
  BOOL = 7,
  STRING = 8,
  ARRAY = 9,
  UINT64 = 10,
  INT64 = 11,
  FLOAT64 = 12,
};

struct gguf_tensor {
  std::string name;
  ggml_type type;
  std::vector<uint64_t> dims;  // ne[0] fastest
  uint64_t offset;             // relative to gguf_file::data_offset()
  uint64_t n_elements() const;
};

// One metadata value. Integers keep their sign so that get_uint can reject negatives; arrays
// keep only the member matching their element type (nested arrays keep their length only).
struct gguf_value {
  gguf_value_type type;
  gguf_value_type elem_type = gguf_value_type::UINT8;  // arrays only
  uint64_t n_elems = 0;                                // arrays only
  int64_t i = 0;                                       // signed integers
  uint64_t u = 0;                                      // unsigned integers
  double f = 0;
  bool b = false;
  std::string s;
  std::vector<int64_t> ints;  // integer and bool arrays
  bool ints_overflow = false;  // a uint64 element did not fit int64
  std::vector<double> floats;
  std::vector<std::string> strings;
};

class gguf_file {
 public:
  explicit gguf_file(const std::string& path);  // throws gguf_error naming the problem
  ~gguf_file();
  gguf_file(const gguf_file&) = delete;
  gguf_file& operator=(const gguf_file&) = delete;

  bool has(const std::string& key) const;
  std::string get_string(const std::string& key) const;  // throws if missing or wrong type
  uint64_t get_uint(const std::string& key) const;       // any integer type, value >= 0
  double get_float(const std::string& key) const;        // f32/f64
  bool get_bool(const std::string& key) const;
  std::vector<std::string> get_string_array(const std::string& key) const;
  std::vector<int64_t> get_int_array(const std::string& key) const;  // integer or bool arrays
  std::vector<double> get_float_array(const std::string& key) const;  // f32/f64 arrays
  const gguf_value& value(const std::string& key) const;
  std::vector<std::string> keys() const;  // sorted

  const gguf_tensor& tensor(const std::string& name) const;
  bool has_tensor(const std::string& name) const;
  const std::vector<gguf_tensor>& tensors() const;

  // Row-major, ne[0] fastest. Supported: F32, F16, BF16, Q4_0, Q4_1, Q8_0, Q6_K.
  std::vector<float> dequantize(const gguf_tensor& t) const;
  // Same into caller memory of t.n_elements() floats (lets the host fill its matrices directly).
  void dequantize_into(const gguf_tensor& t, float* dst) const;

  const std::string& path() const;
  uint32_t version() const { return version_; }
  uint64_t alignment() const { return alignment_; }
  uint64_t data_offset() const { return data_offset_; }
  uint64_t file_size() const { return size_; }
  uint64_t nbytes(const gguf_tensor& t) const;          // bytes of the tensor's data
  const uint8_t* data(const gguf_tensor& t) const;      // start of the tensor's data

 private:
  std::string path_;
  const uint8_t* map_ = nullptr;
  uint64_t size_ = 0;
  uint32_t version_ = 0;
  uint64_t alignment_ = 32;
  uint64_t data_offset_ = 0;
  std::map<std::string, gguf_value> kv_;
  std::vector<gguf_tensor> tensors_;
  std::map<std::string, size_t> tensor_index_;
};

// Scalar conversions used by dequantisation (exposed for tests).
float fp16_to_fp32(uint16_t h);
float bf16_to_fp32(uint16_t h);

}  // namespace kvhost
