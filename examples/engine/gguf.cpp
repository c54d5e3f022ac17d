// One file over 400 lines: the GGUF header parser, the tensor accessors and the block dequantisers
// all read the private type table (block size and bytes of each ggml type); split, they would need
// an internal header for that table alone.
#include "engine/gguf.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <limits>

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the GGUF reader assumes a little-endian host (GGUF files are little-endian)"
#endif

namespace kvhost {
namespace {

struct type_traits {
  ggml_type type;
  const char* name;
  uint64_t block;  // elements per block
  uint64_t bytes;  // bytes per block
};

// Block sizes from ggml's type_traits; types missing here are rejected when the file is opened.
constexpr type_traits k_types[] = {
    {ggml_type::F32, "F32", 1, 4},        {ggml_type::F16, "F16", 1, 2},
    {ggml_type::Q4_0, "Q4_0", 32, 18},    {ggml_type::Q4_1, "Q4_1", 32, 20},
    {ggml_type::Q5_0, "Q5_0", 32, 22},    {ggml_type::Q5_1, "Q5_1", 32, 24},
    {ggml_type::Q8_0, "Q8_0", 32, 34},    {ggml_type::Q8_1, "Q8_1", 32, 36},
    {ggml_type::Q2_K, "Q2_K", 256, 84},   {ggml_type::Q3_K, "Q3_K", 256, 110},
    {ggml_type::Q4_K, "Q4_K", 256, 144},  {ggml_type::Q5_K, "Q5_K", 256, 176},
    {ggml_type::Q6_K, "Q6_K", 256, 210},  {ggml_type::Q8_K, "Q8_K", 256, 292},
    {ggml_type::IQ4_NL, "IQ4_NL", 32, 18}, {ggml_type::IQ4_XS, "IQ4_XS", 256, 136},
    {ggml_type::I8, "I8", 1, 1},          {ggml_type::I16, "I16", 1, 2},
    {ggml_type::I32, "I32", 1, 4},        {ggml_type::I64, "I64", 1, 8},
    {ggml_type::F64, "F64", 1, 8},        {ggml_type::BF16, "BF16", 1, 2},
};

const type_traits* find_type(uint32_t id) {
  for (const auto& t : k_types)
    if (static_cast<uint32_t>(t.type) == id) return &t;
  return nullptr;
}

const char* value_type_name(gguf_value_type t) {
  static const char* const names[] = {"uint8", "int8",  "uint16", "int16",  "uint32",
                                      "int32", "float32", "bool", "string", "array",
                                      "uint64", "int64", "float64"};
  const auto i = static_cast<uint32_t>(t);
  return i < sizeof(names) / sizeof(names[0]) ? names[i] : "unknown";
}

// Bytes of one element on disk; strings and arrays have a fixed-size prefix only.
uint64_t min_value_size(gguf_value_type t) {
  switch (t) {
    case gguf_value_type::UINT8: case gguf_value_type::INT8: case gguf_value_type::BOOL: return 1;
    case gguf_value_type::UINT16: case gguf_value_type::INT16: return 2;
    case gguf_value_type::UINT32: case gguf_value_type::INT32: case gguf_value_type::FLOAT32: return 4;
    case gguf_value_type::UINT64: case gguf_value_type::INT64: case gguf_value_type::FLOAT64: return 8;
    case gguf_value_type::STRING: return 8;
    case gguf_value_type::ARRAY: return 12;
  }
  return 0;
}

bool is_valid_value_type(uint32_t id) { return id <= static_cast<uint32_t>(gguf_value_type::FLOAT64); }

// Bounds-checked little-endian cursor over the mapped file.
class cursor {
 public:
  cursor(const uint8_t* p, uint64_t size, const std::string& path) : p_(p), size_(size), path_(path) {}

  uint64_t pos() const { return pos_; }
  uint64_t remaining() const { return size_ - pos_; }

  void need(uint64_t n, const std::string& what) const {
    if (n > remaining())
      throw gguf_error(path_ + ": file truncated: " + what + " needs " + std::to_string(n) +
                       " bytes at offset " + std::to_string(pos_) + " but the file has " +
                       std::to_string(size_) + " bytes");
  }
  template <class T>
  T read(const std::string& what) {
    need(sizeof(T), what);
    T v;
    std::memcpy(&v, p_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }
  std::string read_string(const std::string& what) {
    const auto len = read<uint64_t>(what + " (string length)");
    need(len, what + " (string of " + std::to_string(len) + " bytes)");
    std::string s(reinterpret_cast<const char*>(p_ + pos_), len);
    pos_ += len;
    return s;
  }
  [[noreturn]] void fail(const std::string& msg) const { throw gguf_error(path_ + ": " + msg); }
  // Rejects a count whose elements could not fit in the rest of the file, before reserving memory.
  void check_count(uint64_t n, uint64_t min_size, const std::string& what) const {
    if (min_size != 0 && n > remaining() / min_size)
      throw gguf_error(path_ + ": corrupt or truncated file: " + what + " claims " + std::to_string(n) +
                       " entries of at least " + std::to_string(min_size) + " bytes but only " +
                       std::to_string(remaining()) + " bytes remain at offset " + std::to_string(pos_));
  }

 private:
  const uint8_t* p_;
  uint64_t size_;
  uint64_t pos_ = 0;
  const std::string& path_;
};

int64_t read_int(cursor& c, gguf_value_type t, const std::string& what, bool& overflow) {
  switch (t) {
    case gguf_value_type::UINT8: return c.read<uint8_t>(what);
    case gguf_value_type::INT8: return c.read<int8_t>(what);
    case gguf_value_type::UINT16: return c.read<uint16_t>(what);
    case gguf_value_type::INT16: return c.read<int16_t>(what);
    case gguf_value_type::UINT32: return c.read<uint32_t>(what);
    case gguf_value_type::INT32: return c.read<int32_t>(what);
    case gguf_value_type::INT64: return c.read<int64_t>(what);
    case gguf_value_type::BOOL: return c.read<uint8_t>(what) != 0;
    case gguf_value_type::UINT64: {
      const auto u = c.read<uint64_t>(what);
      if (u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) overflow = true;
      return static_cast<int64_t>(u);
    }
    default: return 0;
  }
}

bool is_integer(gguf_value_type t) {
  return t != gguf_value_type::FLOAT32 && t != gguf_value_type::FLOAT64 && t != gguf_value_type::BOOL &&
         t != gguf_value_type::STRING && t != gguf_value_type::ARRAY;
}
bool is_signed(gguf_value_type t) {
  return t == gguf_value_type::INT8 || t == gguf_value_type::INT16 || t == gguf_value_type::INT32 ||
         t == gguf_value_type::INT64;
}

gguf_value read_value(cursor& c, gguf_value_type t, const std::string& what, int depth) {
  gguf_value v;
  v.type = t;
  switch (t) {
    case gguf_value_type::FLOAT32: v.f = c.read<float>(what); break;
    case gguf_value_type::FLOAT64: v.f = c.read<double>(what); break;
    case gguf_value_type::BOOL: v.b = c.read<uint8_t>(what) != 0; break;
    case gguf_value_type::STRING: v.s = c.read_string(what); break;
    case gguf_value_type::UINT64: v.u = c.read<uint64_t>(what); break;
    case gguf_value_type::ARRAY: {
      // Nesting costs at least 12 bytes a level; the cap keeps a crafted file from exhausting the stack.
      if (depth >= 8) c.fail(what + ": arrays nested deeper than 8 levels");
      const auto et = c.read<uint32_t>(what + " (array type)");
      if (!is_valid_value_type(et)) c.fail(what + ": unknown array element type " + std::to_string(et));
      v.elem_type = static_cast<gguf_value_type>(et);
      v.n_elems = c.read<uint64_t>(what + " (array length)");
      c.check_count(v.n_elems, min_value_size(v.elem_type), what + " array");
      const auto n = static_cast<size_t>(v.n_elems);
      if (v.elem_type == gguf_value_type::STRING) {
        v.strings.reserve(n);
        for (size_t i = 0; i < n; ++i) v.strings.push_back(c.read_string(what + " [" + std::to_string(i) + "]"));
      } else if (v.elem_type == gguf_value_type::FLOAT32 || v.elem_type == gguf_value_type::FLOAT64) {
        v.floats.reserve(n);
        for (size_t i = 0; i < n; ++i)
          v.floats.push_back(v.elem_type == gguf_value_type::FLOAT32 ? c.read<float>(what) : c.read<double>(what));
      } else if (v.elem_type == gguf_value_type::ARRAY) {
        for (size_t i = 0; i < n; ++i) read_value(c, v.elem_type, what + " [" + std::to_string(i) + "]", depth + 1);
      } else {
        v.ints.reserve(n);
        for (size_t i = 0; i < n; ++i) v.ints.push_back(read_int(c, v.elem_type, what, v.ints_overflow));
      }
      break;
    }
    default: {
      bool unused_overflow = false;
      const int64_t x = read_int(c, t, what, unused_overflow);
      if (is_signed(t)) v.i = x; else v.u = static_cast<uint64_t>(x);
    }
  }
  return v;
}

[[noreturn]] void fail_type(const std::string& path, const std::string& key, const char* want,
                            const gguf_value& v) {
  std::string got = value_type_name(v.type);
  if (v.type == gguf_value_type::ARRAY) got += std::string(" of ") + value_type_name(v.elem_type);
  throw gguf_error(path + ": metadata key '" + key + "' is " + got + ", expected " + want);
}

}  // namespace

std::string to_string(ggml_type t) {
  const auto* tr = find_type(static_cast<uint32_t>(t));
  return tr ? tr->name : "type#" + std::to_string(static_cast<uint32_t>(t));
}

float fp16_to_fp32(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  const uint32_t mant = h & 0x3ffu;
  if (exp == 0) {  // zero or subnormal: mant * 2^-24
    const float f = std::ldexp(static_cast<float>(mant), -24);
    return sign ? -f : f;
  }
  const uint32_t bits = exp == 31 ? (sign | 0x7f800000u | (mant << 13)) : (sign | ((exp + 112) << 23) | (mant << 13));
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

float bf16_to_fp32(uint16_t h) {
  const uint32_t bits = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

uint64_t gguf_tensor::n_elements() const {
  uint64_t n = 1;
  for (auto d : dims) n *= d;
  return n;
}

gguf_file::gguf_file(const std::string& path) : path_(path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw gguf_error(path + ": cannot open: " + std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const int e = errno;
    ::close(fd);
    throw gguf_error(path + ": cannot stat: " + std::strerror(e));
  }
  size_ = static_cast<uint64_t>(st.st_size);
  if (size_ > 0) {
    void* m = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (m == MAP_FAILED) {
      const int e = errno;
      ::close(fd);
      throw gguf_error(path + ": cannot mmap: " + std::strerror(e));
    }
    map_ = static_cast<const uint8_t*>(m);
  }
  ::close(fd);  // the mapping stays valid

  try {
    cursor c(map_, size_, path_);
    const auto magic = c.read<uint32_t>("magic");
    if (std::memcmp(&magic, "GGUF", 4) != 0)
      throw gguf_error(path_ + ": not a GGUF file (bad magic; expected 'GGUF')");
    version_ = c.read<uint32_t>("version");
    if (version_ != 3)
      throw gguf_error(path_ + ": unsupported GGUF version " + std::to_string(version_) + " (only version 3 is supported)");
    const auto n_tensors = c.read<uint64_t>("tensor count");
    const auto n_kv = c.read<uint64_t>("metadata count");
    c.check_count(n_kv, 8 + 4 + 1, "metadata directory");

    for (uint64_t i = 0; i < n_kv; ++i) {
      const std::string where = "metadata entry " + std::to_string(i);
      std::string key = c.read_string(where + " key");
      const auto t = c.read<uint32_t>(where + " ('" + key + "') type");
      if (!is_valid_value_type(t))
        throw gguf_error(path_ + ": metadata key '" + key + "' has unknown value type " + std::to_string(t));
      gguf_value v = read_value(c, static_cast<gguf_value_type>(t), "metadata key '" + key + "'", 0);
      if (!kv_.emplace(key, std::move(v)).second)
        throw gguf_error(path_ + ": duplicate metadata key '" + key + "'");
    }

    if (has("general.alignment")) {
      alignment_ = get_uint("general.alignment");
      if (alignment_ == 0 || (alignment_ & (alignment_ - 1)) != 0)
        throw gguf_error(path_ + ": general.alignment = " + std::to_string(alignment_) + " is not a power of two");
    }

    c.check_count(n_tensors, 8 + 4 + 8 + 4 + 8, "tensor directory");
    tensors_.reserve(static_cast<size_t>(n_tensors));
    for (uint64_t i = 0; i < n_tensors; ++i) {
      gguf_tensor t;
      t.name = c.read_string("tensor " + std::to_string(i) + " name");
      const std::string what = "tensor '" + t.name + "'";
      const auto n_dims = c.read<uint32_t>(what + " dimension count");
      if (n_dims == 0 || n_dims > 4)
        throw gguf_error(path_ + ": " + what + " has " + std::to_string(n_dims) + " dimensions (accepted: 1 to 4)");
      uint64_t n = 1;
      for (uint32_t d = 0; d < n_dims; ++d) {
        const auto ne = c.read<uint64_t>(what + " dimensions");
        // A 0-element tensor holds no weights, and its data pointer could be null: rejected here.
        if (ne == 0) throw gguf_error(path_ + ": " + what + " has a dimension of 0 (no elements)");
        if (n > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) / ne)
          throw gguf_error(path_ + ": " + what + " has too many elements");
        n *= ne;
        t.dims.push_back(ne);
      }
      const auto type_id = c.read<uint32_t>(what + " type");
      const auto* tr = find_type(type_id);
      if (!tr)
        throw gguf_error(path_ + ": " + what + " has unsupported ggml type id " + std::to_string(type_id));
      t.type = tr->type;
      if (t.dims[0] % tr->block != 0)
        throw gguf_error(path_ + ": " + what + " row length " + std::to_string(t.dims[0]) +
                         " is not a multiple of the " + tr->name + " block size " + std::to_string(tr->block));
      t.offset = c.read<uint64_t>(what + " offset");
      if (t.offset % alignment_ != 0)
        throw gguf_error(path_ + ": " + what + " offset " + std::to_string(t.offset) + " is not aligned to " +
                         std::to_string(alignment_));
      if (!tensor_index_.emplace(t.name, tensors_.size()).second)
        throw gguf_error(path_ + ": duplicate tensor name '" + t.name + "'");
      tensors_.push_back(std::move(t));
    }

    data_offset_ = (c.pos() + alignment_ - 1) / alignment_ * alignment_;
    for (const auto& t : tensors_) {
      const auto* tr = find_type(static_cast<uint32_t>(t.type));
      const uint64_t blocks = t.n_elements() / tr->block;
      const uint64_t avail = data_offset_ <= size_ ? size_ - data_offset_ : 0;
      if (blocks > std::numeric_limits<uint64_t>::max() / tr->bytes || t.offset > avail ||
          blocks * tr->bytes > avail - t.offset)
        throw gguf_error(path_ + ": file truncated: tensor '" + t.name + "' data [" +
                         std::to_string(data_offset_ + t.offset) + ", +" + std::to_string(blocks * tr->bytes) +
                         ") extends past the end of the file (" + std::to_string(size_) + " bytes)");
    }
  } catch (...) {
    if (map_) ::munmap(const_cast<uint8_t*>(map_), size_);
    throw;
  }
}

gguf_file::~gguf_file() {
  if (map_) ::munmap(const_cast<uint8_t*>(map_), size_);
}

bool gguf_file::has(const std::string& key) const { return kv_.count(key) != 0; }

const gguf_value& gguf_file::value(const std::string& key) const {
  const auto it = kv_.find(key);
  if (it == kv_.end()) throw gguf_error(path_ + ": metadata key '" + key + "' not found");
  return it->second;
}

std::vector<std::string> gguf_file::keys() const {
  std::vector<std::string> out;
  out.reserve(kv_.size());
  for (const auto& kv : kv_) out.push_back(kv.first);
  return out;
}

std::string gguf_file::get_string(const std::string& key) const {
  const auto& v = value(key);
  if (v.type != gguf_value_type::STRING) fail_type(path_, key, "string", v);
  return v.s;
}

uint64_t gguf_file::get_uint(const std::string& key) const {
  const auto& v = value(key);
  if (!is_integer(v.type)) fail_type(path_, key, "an integer", v);
  if (is_signed(v.type)) {
    if (v.i < 0) throw gguf_error(path_ + ": metadata key '" + key + "' is negative (" + std::to_string(v.i) + ")");
    return static_cast<uint64_t>(v.i);
  }
  return v.u;
}

double gguf_file::get_float(const std::string& key) const {
  const auto& v = value(key);
  if (v.type != gguf_value_type::FLOAT32 && v.type != gguf_value_type::FLOAT64) fail_type(path_, key, "float32/float64", v);
  return v.f;
}

bool gguf_file::get_bool(const std::string& key) const {
  const auto& v = value(key);
  if (v.type != gguf_value_type::BOOL) fail_type(path_, key, "bool", v);
  return v.b;
}

std::vector<std::string> gguf_file::get_string_array(const std::string& key) const {
  const auto& v = value(key);
  if (v.type != gguf_value_type::ARRAY || v.elem_type != gguf_value_type::STRING)
    fail_type(path_, key, "array of string", v);
  return v.strings;
}

std::vector<int64_t> gguf_file::get_int_array(const std::string& key) const {
  const auto& v = value(key);
  if (v.type != gguf_value_type::ARRAY ||
      (!is_integer(v.elem_type) && v.elem_type != gguf_value_type::BOOL))
    fail_type(path_, key, "array of integers", v);
  if (v.ints_overflow) throw gguf_error(path_ + ": metadata key '" + key + "' has a uint64 element above INT64_MAX");
  return v.ints;
}

std::vector<double> gguf_file::get_float_array(const std::string& key) const {
  const auto& v = value(key);
  if (v.type != gguf_value_type::ARRAY ||
      (v.elem_type != gguf_value_type::FLOAT32 && v.elem_type != gguf_value_type::FLOAT64))
    fail_type(path_, key, "array of float32/float64", v);
  return v.floats;
}

const gguf_tensor& gguf_file::tensor(const std::string& name) const {
  const auto it = tensor_index_.find(name);
  if (it == tensor_index_.end()) throw gguf_error(path_ + ": tensor '" + name + "' not found");
  return tensors_[it->second];
}

bool gguf_file::has_tensor(const std::string& name) const { return tensor_index_.count(name) != 0; }

const std::vector<gguf_tensor>& gguf_file::tensors() const { return tensors_; }

const std::string& gguf_file::path() const { return path_; }

uint64_t gguf_file::nbytes(const gguf_tensor& t) const {
  const auto* tr = find_type(static_cast<uint32_t>(t.type));
  return t.n_elements() / tr->block * tr->bytes;
}

const uint8_t* gguf_file::data(const gguf_tensor& t) const {
  // Offsets were validated against this file only: refuse a tensor record from another file.
  const auto& own = tensor(t.name);
  if (own.offset != t.offset || own.type != t.type || own.dims != t.dims)
    throw gguf_error(path_ + ": tensor '" + t.name + "' passed in is not this file's");
  return map_ + data_offset_ + own.offset;
}

std::vector<float> gguf_file::dequantize(const gguf_tensor& t) const {
  std::vector<float> out(static_cast<size_t>(t.n_elements()));
  dequantize_into(t, out.data());
  return out;
}

namespace {

uint16_t load_u16(const uint8_t* p) {
  uint16_t v;
  std::memcpy(&v, p, 2);
  return v;
}

// One block of each format (ggml-common.h layouts), 32 or 256 floats out.
void dq_q4_0(const uint8_t* b, float* y) {  // half d; u8 qs[16]: low nibbles = 0..15, high = 16..31
  const float d = fp16_to_fp32(load_u16(b));
  const uint8_t* qs = b + 2;
  for (int j = 0; j < 16; ++j) {
    y[j] = static_cast<float>((qs[j] & 0x0F) - 8) * d;
    y[j + 16] = static_cast<float>((qs[j] >> 4) - 8) * d;
  }
}

void dq_q4_1(const uint8_t* b, float* y) {  // half d, half m; u8 qs[16]
  const float d = fp16_to_fp32(load_u16(b));
  const float m = fp16_to_fp32(load_u16(b + 2));
  const uint8_t* qs = b + 4;
  for (int j = 0; j < 16; ++j) {
    y[j] = static_cast<float>(qs[j] & 0x0F) * d + m;
    y[j + 16] = static_cast<float>(qs[j] >> 4) * d + m;
  }
}

void dq_q8_0(const uint8_t* b, float* y) {  // half d; i8 qs[32]
  const float d = fp16_to_fp32(load_u16(b));
  const auto* qs = reinterpret_cast<const int8_t*>(b + 2);
  for (int j = 0; j < 32; ++j) y[j] = static_cast<float>(qs[j]) * d;
}

void dq_q6_k(const uint8_t* b, float* y) {  // u8 ql[128]; u8 qh[64]; i8 scales[16]; half d
  const uint8_t* ql = b;
  const uint8_t* qh = b + 128;
  const auto* sc = reinterpret_cast<const int8_t*>(b + 192);
  const float d = fp16_to_fp32(load_u16(b + 208));
  for (int half = 0; half < 2; ++half) {
    for (int l = 0; l < 32; ++l) {
      const int is = l / 16;
      const int q1 = ((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
      const int q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
      const int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
      const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
      y[l] = d * static_cast<float>(sc[is] * q1);
      y[l + 32] = d * static_cast<float>(sc[is + 2] * q2);
      y[l + 64] = d * static_cast<float>(sc[is + 4] * q3);
      y[l + 96] = d * static_cast<float>(sc[is + 6] * q4);
    }
    y += 128;
    ql += 64;
    qh += 32;
    sc += 8;
  }
}

template <class F>
void for_blocks(const uint8_t* src, float* dst, int64_t n_blocks, uint64_t block, uint64_t bytes, F f) {
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n_blocks; ++i)
    f(src + static_cast<uint64_t>(i) * bytes, dst + static_cast<uint64_t>(i) * block);
}

}  // namespace

void gguf_file::dequantize_into(const gguf_tensor& t, float* dst) const {
  const auto* tr = find_type(static_cast<uint32_t>(t.type));
  const uint8_t* src = data(t);
  const auto n = static_cast<int64_t>(t.n_elements());
  const int64_t nb = n / static_cast<int64_t>(tr->block);
  if (n == 0) return;  // nothing to copy (the reader rejects such tensors; dst may be null)
  switch (t.type) {
    case ggml_type::F32: std::memcpy(dst, src, static_cast<size_t>(n) * sizeof(float)); return;
    case ggml_type::F16:
      for_blocks(src, dst, nb, 1, 2, [](const uint8_t* b, float* y) { *y = fp16_to_fp32(load_u16(b)); });
      return;
    case ggml_type::BF16:
      for_blocks(src, dst, nb, 1, 2, [](const uint8_t* b, float* y) { *y = bf16_to_fp32(load_u16(b)); });
      return;
    case ggml_type::Q4_0: for_blocks(src, dst, nb, tr->block, tr->bytes, dq_q4_0); return;
    case ggml_type::Q4_1: for_blocks(src, dst, nb, tr->block, tr->bytes, dq_q4_1); return;
    case ggml_type::Q8_0: for_blocks(src, dst, nb, tr->block, tr->bytes, dq_q8_0); return;
    case ggml_type::Q6_K: for_blocks(src, dst, nb, tr->block, tr->bytes, dq_q6_k); return;
    default:
      throw gguf_error(path_ + ": cannot dequantize tensor '" + t.name + "' of type " + to_string(t.type) +
                       " (supported: F32, F16, BF16, Q4_0, Q4_1, Q8_0, Q6_K)");
  }
}

}  // namespace kvhost
