// libFuzzer target: the GGUF reader (header, metadata, tensor table), dequantisation of small
// tensors, the model's configuration checks and, for a file that passes them, the model
// constructor and the tokenizer. Any exception is a clean rejection; a crash or a sanitizer
// report is a finding.
#include <cstddef>
#include <cstdint>
#include <exception>

#include "fuzz_common.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string& path = kvfuzz::write_input("gguf", data, size);
  try {
    const kvhost::gguf_file f(path);
    for (const auto& key : f.keys()) {
      const kvhost::gguf_value& v = f.value(key);
      try {
        switch (v.type) {
          case kvhost::gguf_value_type::STRING: (void)f.get_string(key); break;
          case kvhost::gguf_value_type::FLOAT32:
          case kvhost::gguf_value_type::FLOAT64: (void)f.get_float(key); break;
          case kvhost::gguf_value_type::BOOL: (void)f.get_bool(key); break;
          case kvhost::gguf_value_type::ARRAY:
            if (v.elem_type == kvhost::gguf_value_type::STRING) (void)f.get_string_array(key);
            else if (v.elem_type == kvhost::gguf_value_type::FLOAT32 || v.elem_type == kvhost::gguf_value_type::FLOAT64)
              (void)f.get_float_array(key);
            else (void)f.get_int_array(key);
            break;
          default: (void)f.get_uint(key);
        }
      } catch (const kvhost::gguf_error&) {
      }
    }
    for (const auto& t : f.tensors()) {
      if (t.n_elements() > (1u << 16)) continue;  // small tensors only: the fuzzer's time is spent reading
      try {
        (void)f.dequantize(t);
      } catch (const kvhost::gguf_error&) {
      }
    }
    try {
      const kvhost::model_config c = kvhost::model_config::from_gguf(f);
      if (static_cast<uint64_t>(c.n_embd) * static_cast<uint64_t>(c.n_vocab) < (1u << 22)) {
        const kvhost::model m(f);
        (void)m;
      }
    } catch (const std::exception&) {
    }
    try {
      (void)kvhost::tokenizer::from_gguf(f);
    } catch (const std::exception&) {
    }
  } catch (const std::exception&) {
  }
  return 0;
}
