// GGUF reader: the default model's metadata, bad files (truncated, wrong magic or version,
// corrupt counts, unsupported architecture) and dequantisation of every supported type on
// hand-made blocks. Synthetic files come from the small writer below.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <string>
#include <vector>

#include "engine/gguf.hpp"
#include "engine/model.hpp"

namespace {

using kvhost::ggml_type;
using kvhost::gguf_error;
using kvhost::gguf_file;
namespace fs = std::filesystem;

// ---- a minimal GGUF writer -------------------------------------------------------------------

struct bytes {
  std::string b;
  template <class T>
  bytes& put(T v) {
    b.append(reinterpret_cast<const char*>(&v), sizeof v);
    return *this;
  }
  bytes& str(const std::string& s) {
    put<uint64_t>(s.size());
    b += s;
    return *this;
  }
};

enum vt : uint32_t { U8, I8, U16, I16, U32, I32, F32, BOOL, STR, ARR, U64, I64, F64 };

struct kv_entry {
  std::string key;
  uint32_t type;
  std::string payload;  // the encoded value
};
struct tensor_entry {
  std::string name;
  ggml_type type;
  std::vector<uint64_t> dims;
  std::string data;
};

template <class T>
kv_entry kv(const std::string& key, vt type, T v) {
  return {key, type, bytes().put(v).b};
}
kv_entry kv_str(const std::string& key, const std::string& s) { return {key, STR, bytes().str(s).b}; }

std::string build_gguf(const std::vector<kv_entry>& kvs, const std::vector<tensor_entry>& tensors,
                       uint32_t version = 3, uint64_t alignment = 32) {
  bytes h;
  h.b = "GGUF";
  h.put(version).put<uint64_t>(tensors.size()).put<uint64_t>(kvs.size());
  for (const auto& e : kvs) {
    h.str(e.key).put(e.type);
    h.b += e.payload;
  }
  std::string data;
  for (const auto& t : tensors) {
    data.resize((data.size() + alignment - 1) / alignment * alignment, '\0');
    h.str(t.name).put<uint32_t>(static_cast<uint32_t>(t.dims.size()));
    for (auto d : t.dims) h.put(d);
    h.put(static_cast<uint32_t>(t.type)).put<uint64_t>(data.size());
    data += t.data;
  }
  h.b.resize((h.b.size() + alignment - 1) / alignment * alignment, '\0');
  return h.b + data;
}

class temp_dir {
 public:
  temp_dir() : path_(fs::temp_directory_path() / ("kvtrim_gguf_test_" + std::to_string(::getpid()))) {
    fs::create_directories(path_);
  }
  ~temp_dir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  std::string write(const std::string& name, const std::string& content) const {
    const auto p = (path_ / name).string();
    std::ofstream(p, std::ios::binary).write(content.data(), static_cast<std::streamsize>(content.size()));
    return p;
  }

 private:
  fs::path path_;
};

// The gguf_error message of opening `content`, or "" when it opens.
std::string open_error(const temp_dir& dir, const std::string& content) {
  try {
    gguf_file f(dir.write("bad.gguf", content));
    return "";
  } catch (const gguf_error& e) {
    return e.what();
  }
}

std::string model_path_or_fail() {
  const auto p = kvhost::default_model_path();
  if (!fs::exists(p)) ADD_FAILURE() << "model not found at " << p << ": run scripts/fetch_model.sh (or set KVTRIM_MODEL)";
  return p;
}

// ---- the default model -----------------------------------------------------------------------

TEST(GgufModelFile, MetadataOfTheDefaultModel) {
  const auto path = model_path_or_fail();
  if (!fs::exists(path)) return;
  const gguf_file f(path);
  EXPECT_EQ(f.version(), 3u);
  EXPECT_EQ(f.alignment(), 32u);
  EXPECT_EQ(f.data_offset() % 32, 0u);
  EXPECT_EQ(f.get_string("general.architecture"), "llama");
  EXPECT_EQ(f.get_uint("llama.block_count"), 30u);
  EXPECT_EQ(f.get_uint("llama.embedding_length"), 576u);
  EXPECT_EQ(f.get_uint("llama.feed_forward_length"), 1536u);
  EXPECT_EQ(f.get_uint("llama.attention.head_count"), 9u);
  EXPECT_EQ(f.get_uint("llama.attention.head_count_kv"), 3u);
  EXPECT_EQ(f.get_uint("llama.context_length"), 8192u);
  EXPECT_DOUBLE_EQ(f.get_float("llama.rope.freq_base"), 100000.0);
  EXPECT_NEAR(f.get_float("llama.attention.layer_norm_rms_epsilon"), 1e-5, 1e-12);
  EXPECT_EQ(f.get_string_array("tokenizer.ggml.tokens").size(), 49152u);
  EXPECT_EQ(f.get_int_array("tokenizer.ggml.token_type").size(), 49152u);
  EXPECT_FALSE(f.get_string_array("tokenizer.ggml.merges").empty());
  EXPECT_THROW(f.get_string("llama.block_count"), gguf_error);
  EXPECT_THROW(f.get_uint("no.such.key"), gguf_error);

  EXPECT_EQ(f.tensors().size(), 2u + 30u * 9u);
  EXPECT_FALSE(f.has_tensor("output.weight"));
  const auto& emb = f.tensor("token_embd.weight");
  EXPECT_EQ(emb.type, ggml_type::Q8_0);
  EXPECT_EQ(emb.dims, (std::vector<uint64_t>{576, 49152}));
  EXPECT_EQ(f.tensor("blk.0.attn_k.weight").type, ggml_type::Q4_1);
  EXPECT_EQ(f.tensor("blk.0.attn_k.weight").dims, (std::vector<uint64_t>{576, 192}));
  EXPECT_EQ(f.tensor("blk.29.ffn_down.weight").dims, (std::vector<uint64_t>{1536, 576}));
  EXPECT_EQ(f.tensor("output_norm.weight").type, ggml_type::F32);
  EXPECT_THROW(f.tensor("nope"), gguf_error);

  const auto norm = f.dequantize(f.tensor("output_norm.weight"));
  ASSERT_EQ(norm.size(), 576u);
  for (float x : norm) ASSERT_TRUE(std::isfinite(x));
}

TEST(GgufModelFile, TruncatedCopiesAreRejected) {
  const auto path = model_path_or_fail();
  if (!fs::exists(path)) return;
  const gguf_file full(path);
  std::ifstream in(path, std::ios::binary);
  // Header complete, tensor data cut 1 MiB in; then the header itself cut short.
  std::string head(static_cast<size_t>(full.data_offset() + (1 << 20)), '\0');
  in.read(&head[0], static_cast<std::streamsize>(head.size()));
  const temp_dir dir;
  const auto data_cut = open_error(dir, head);
  EXPECT_NE(data_cut.find("truncated"), std::string::npos) << data_cut;
  EXPECT_NE(data_cut.find("extends past the end"), std::string::npos) << data_cut;
  const auto header_cut = open_error(dir, head.substr(0, 5000));
  EXPECT_NE(header_cut.find("truncated"), std::string::npos) << header_cut;
  EXPECT_NE(open_error(dir, head.substr(0, 10)).find("truncated"), std::string::npos);
  EXPECT_NE(open_error(dir, "").find("truncated"), std::string::npos);
}

// ---- malformed files -------------------------------------------------------------------------

TEST(GgufReader, RejectsWrongMagicAndVersion) {
  const temp_dir dir;
  auto good = build_gguf({kv_str("general.architecture", "llama")}, {});
  EXPECT_EQ(open_error(dir, good), "");
  auto bad_magic = good;
  bad_magic[3] = 'X';
  EXPECT_NE(open_error(dir, bad_magic).find("bad magic"), std::string::npos);
  const auto v2 = open_error(dir, build_gguf({}, {}, 2));
  EXPECT_NE(v2.find("unsupported GGUF version 2"), std::string::npos) << v2;
  EXPECT_NE(open_error(dir, "definitely not a model file").find("bad magic"), std::string::npos);
  EXPECT_THROW(gguf_file("/nonexistent/dir/x.gguf"), gguf_error);
}

TEST(GgufReader, CorruptCountsAndLengthsGiveErrorsNotCrashes) {
  const temp_dir dir;
  // A string length far past the end of the file.
  bytes huge_string;
  huge_string.b = "GGUF";
  huge_string.put<uint32_t>(3).put<uint64_t>(0).put<uint64_t>(1).put<uint64_t>(1ull << 60);
  EXPECT_NE(open_error(dir, huge_string.b).find("truncated"), std::string::npos);
  // Absurd metadata and tensor counts.
  bytes many;
  many.b = "GGUF";
  many.put<uint32_t>(3).put<uint64_t>(0).put<uint64_t>(~0ull);
  EXPECT_NE(open_error(dir, many.b).find("claims"), std::string::npos);
  bytes many_tensors;
  many_tensors.b = "GGUF";
  many_tensors.put<uint32_t>(3).put<uint64_t>(1ull << 40).put<uint64_t>(0);
  EXPECT_NE(open_error(dir, many_tensors.b).find("tensor directory"), std::string::npos);
  // An array claiming more elements than the file holds.
  const auto arr = open_error(dir, build_gguf({{"a", ARR, bytes().put<uint32_t>(I32).put<uint64_t>(1ull << 50).b}}, {}));
  EXPECT_NE(arr.find("claims"), std::string::npos) << arr;
  // Unknown value type, unknown tensor type, bad dimension count, misaligned offset, duplicates.
  EXPECT_NE(open_error(dir, build_gguf({{"a", 99, ""}}, {})).find("unknown value type"), std::string::npos);
  EXPECT_NE(open_error(dir, build_gguf({}, {{"t", static_cast<ggml_type>(77), {4}, std::string(16, '\0')}}))
                .find("unsupported ggml type id 77"),
            std::string::npos);
  EXPECT_NE(open_error(dir, build_gguf({}, {{"t", ggml_type::F32, {1, 1, 1, 1, 1}, std::string(4, '\0')}}))
                .find("dimensions"),
            std::string::npos);
  EXPECT_NE(open_error(dir, build_gguf({}, {{"t", ggml_type::Q8_0, {16}, std::string(34, '\0')}})).find("block size"),
            std::string::npos);
  EXPECT_NE(open_error(dir, build_gguf({kv<uint32_t>("a", U32, 1), kv<uint32_t>("a", U32, 2)}, {})).find("duplicate"),
            std::string::npos);
  EXPECT_NE(open_error(dir, build_gguf({kv<uint32_t>("general.alignment", U32, 24)}, {})).find("power of two"),
            std::string::npos);
  auto misaligned = build_gguf({}, {{"t", ggml_type::F32, {1}, std::string(4, '\0')}});
  // The offset is the last 8 bytes of the tensor info, right before the header padding.
  const auto off_pos = misaligned.find("t") + 1 + 4 + 8 + 4;
  misaligned[off_pos] = 4;
  EXPECT_NE(open_error(dir, misaligned).find("not aligned"), std::string::npos);
}

TEST(GgufReader, UnsupportedArchitectureIsNamed) {
  const temp_dir dir;
  const auto path = dir.write("gpt2.gguf", build_gguf({kv_str("general.architecture", "gpt2"),
                                                       kv<uint32_t>("gpt2.block_count", U32, 2)},
                                                      {{"token_embd.weight", ggml_type::F32, {4, 2}, std::string(32, '\0')}}));
  const gguf_file f(path);
  try {
    kvhost::model_config::from_gguf(f);
    FAIL() << "gpt2 accepted";
  } catch (const gguf_error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("unsupported architecture 'gpt2'"), std::string::npos) << msg;
    EXPECT_NE(msg.find("supported: llama"), std::string::npos) << msg;
  }
}

// ---- metadata of every value type ------------------------------------------------------------

TEST(GgufReader, ReadsEveryValueType) {
  const temp_dir dir;
  const auto arr = [](vt elem, uint64_t n, const std::string& payload) {
    return bytes().put<uint32_t>(elem).put(n).b + payload;
  };
  const std::vector<kv_entry> kvs{
      kv<uint8_t>("u8", U8, 200),
      kv<int8_t>("i8", I8, -5),
      kv<uint16_t>("u16", U16, 60000),
      kv<int16_t>("i16", I16, 1234),
      kv<uint32_t>("u32", U32, 4000000000u),
      kv<int32_t>("i32", I32, 7),
      kv<float>("f32", F32, 0.25f),
      kv<uint8_t>("bool", BOOL, 1),
      kv_str("str", "héllo"),
      kv<uint64_t>("u64", U64, 1ull << 40),
      kv<int64_t>("i64", I64, -(1ll << 40)),
      kv<double>("f64", F64, 1e-300),
      {"a_str", ARR, arr(STR, 3, bytes().str("a").str("").str("ccc").b)},
      {"a_i16", ARR, arr(I16, 3, bytes().put<int16_t>(-1).put<int16_t>(0).put<int16_t>(300).b)},
      {"a_u64", ARR, arr(U64, 2, bytes().put<uint64_t>(5).put<uint64_t>(~0ull).b)},
      {"a_f32", ARR, arr(F32, 2, bytes().put(1.5f).put(-2.0f).b)},
      {"a_bool", ARR, arr(BOOL, 2, bytes().put<uint8_t>(0).put<uint8_t>(1).b)},
      {"a_nested", ARR, arr(ARR, 1, arr(U8, 2, bytes().put<uint8_t>(1).put<uint8_t>(2).b))},
      {"a_empty", ARR, arr(I32, 0, "")},
      kv<uint32_t>("general.alignment", U32, 64),
  };
  const gguf_file f(dir.write("kv.gguf", build_gguf(kvs, {{"t", ggml_type::F32, {2}, bytes().put(3.f).put(4.f).b}}, 3, 64)));
  EXPECT_EQ(f.get_uint("u8"), 200u);
  EXPECT_THROW(f.get_uint("i8"), gguf_error);  // negative
  EXPECT_EQ(f.value("i8").i, -5);
  EXPECT_EQ(f.get_uint("u16"), 60000u);
  EXPECT_EQ(f.get_uint("i16"), 1234u);
  EXPECT_EQ(f.get_uint("u32"), 4000000000u);
  EXPECT_EQ(f.get_uint("i32"), 7u);
  EXPECT_EQ(f.get_uint("u64"), 1ull << 40);
  EXPECT_EQ(f.value("i64").i, -(1ll << 40));
  EXPECT_FLOAT_EQ(static_cast<float>(f.get_float("f32")), 0.25f);
  EXPECT_DOUBLE_EQ(f.get_float("f64"), 1e-300);
  EXPECT_TRUE(f.get_bool("bool"));
  EXPECT_EQ(f.get_string("str"), "héllo");
  EXPECT_EQ(f.get_string_array("a_str"), (std::vector<std::string>{"a", "", "ccc"}));
  EXPECT_EQ(f.get_int_array("a_i16"), (std::vector<int64_t>{-1, 0, 300}));
  EXPECT_THROW(f.get_int_array("a_u64"), gguf_error);  // 2^64-1 does not fit int64
  EXPECT_EQ(f.get_float_array("a_f32"), (std::vector<double>{1.5, -2.0}));
  EXPECT_EQ(f.get_int_array("a_bool"), (std::vector<int64_t>{0, 1}));
  EXPECT_EQ(f.value("a_nested").n_elems, 1u);
  EXPECT_THROW(f.get_int_array("a_nested"), gguf_error);
  EXPECT_TRUE(f.get_int_array("a_empty").empty());
  // Wrong types are named in the message.
  EXPECT_THROW(f.get_float("u8"), gguf_error);
  EXPECT_THROW(f.get_bool("u8"), gguf_error);
  EXPECT_THROW(f.get_uint("f32"), gguf_error);
  EXPECT_THROW(f.get_string_array("a_i16"), gguf_error);
  try {
    f.get_string("a_f32");
  } catch (const gguf_error& e) {
    EXPECT_NE(std::string(e.what()).find("array of float32, expected string"), std::string::npos) << e.what();
  }
  EXPECT_EQ(f.keys().size(), kvs.size());
  // general.alignment moves the data section.
  EXPECT_EQ(f.alignment(), 64u);
  EXPECT_EQ(f.data_offset() % 64, 0u);
  EXPECT_EQ(f.dequantize(f.tensor("t")), (std::vector<float>{3.f, 4.f}));
}

// ---- dequantisation on hand-made blocks ------------------------------------------------------

constexpr uint16_t h_half = 0x3800, h_quarter = 0x3400, h_one = 0x3C00, h_minus_one = 0xBC00, h_two = 0x4000;

TEST(GgufDequantize, HalfAndBfloatConversions) {
  EXPECT_EQ(kvhost::fp16_to_fp32(h_one), 1.0f);
  EXPECT_EQ(kvhost::fp16_to_fp32(0xC000), -2.0f);
  EXPECT_EQ(kvhost::fp16_to_fp32(0x3555), 0.333251953125f);
  EXPECT_EQ(kvhost::fp16_to_fp32(0x0001), std::ldexp(1.0f, -24));  // smallest subnormal
  EXPECT_EQ(kvhost::fp16_to_fp32(0x8000), -0.0f);
  EXPECT_EQ(kvhost::fp16_to_fp32(0x7C00), std::numeric_limits<float>::infinity());
  EXPECT_TRUE(std::isnan(kvhost::fp16_to_fp32(0x7E00)));
  EXPECT_EQ(kvhost::bf16_to_fp32(0x3F80), 1.0f);
  EXPECT_EQ(kvhost::bf16_to_fp32(0xC040), -3.0f);
}

TEST(GgufDequantize, EverySupportedType) {
  std::vector<tensor_entry> ts;
  ts.push_back({"f32", ggml_type::F32, {2}, bytes().put(1.5f).put(-2.0f).b});
  ts.push_back({"f16", ggml_type::F16, {3}, bytes().put(h_one).put<uint16_t>(0xC000).put(h_quarter).b});
  ts.push_back({"bf16", ggml_type::BF16, {2}, bytes().put<uint16_t>(0x3F80).put<uint16_t>(0xC040).b});
  // Q4_0, Q4_1: byte j holds element j in its low nibble and element j + 16 in its high nibble.
  bytes q40, q41, q80;
  q40.put(h_half);
  q41.put(h_quarter).put(h_minus_one);
  for (int j = 0; j < 16; ++j) {
    q40.put(static_cast<uint8_t>(j | ((15 - j) << 4)));
    q41.put(static_cast<uint8_t>(j | ((15 - j) << 4)));
  }
  q80.put(h_two);
  for (int j = 0; j < 32; ++j) q80.put(static_cast<int8_t>(j - 16));
  ts.push_back({"q4_0", ggml_type::Q4_0, {32}, q40.b});
  ts.push_back({"q4_1", ggml_type::Q4_1, {32}, q41.b});
  ts.push_back({"q8_0", ggml_type::Q8_0, {32}, q80.b});
  // Q6_K: element i = 128 h + 32 g + l has its low 4 bits in ql[64 h + 32 (g % 2) + l] (low
  // nibble for g < 2, high nibble otherwise), its high 2 bits in qh[32 h + l] at bit 2 g, and
  // uses the int8 scale of its 16-element sub-block i / 16; value = d * scale * (q - 32).
  const auto q6 = [](int i) { return (i * 7 + 3) % 64; };
  const auto sc6 = [](int sub) { return sub * 3 - 20; };
  std::string ql(128, '\0'), qh(64, '\0');
  for (int i = 0; i < 256; ++i) {
    const int h = i / 128, g = (i % 128) / 32, l = i % 32;
    auto& lo = ql[static_cast<size_t>(64 * h + 32 * (g % 2) + l)];
    lo = static_cast<char>(static_cast<uint8_t>(lo) | ((q6(i) & 0xF) << (g < 2 ? 0 : 4)));
    auto& hi = qh[static_cast<size_t>(32 * h + l)];
    hi = static_cast<char>(static_cast<uint8_t>(hi) | ((q6(i) >> 4) << (2 * g)));
  }
  bytes q6k;
  q6k.b = ql + qh;
  for (int s = 0; s < 16; ++s) q6k.put(static_cast<int8_t>(sc6(s)));
  q6k.put(h_half);
  ASSERT_EQ(q6k.b.size(), 210u);
  ts.push_back({"q6_k", ggml_type::Q6_K, {256}, q6k.b});
  ts.push_back({"q4_k", ggml_type::Q4_K, {256}, std::string(144, '\0')});

  const temp_dir dir;
  const gguf_file f(dir.write("dq.gguf", build_gguf({}, ts)));
  EXPECT_EQ(f.dequantize(f.tensor("f32")), (std::vector<float>{1.5f, -2.0f}));
  EXPECT_EQ(f.dequantize(f.tensor("f16")), (std::vector<float>{1.0f, -2.0f, 0.25f}));
  EXPECT_EQ(f.dequantize(f.tensor("bf16")), (std::vector<float>{1.0f, -3.0f}));
  const auto a = f.dequantize(f.tensor("q4_0")), b = f.dequantize(f.tensor("q4_1")), c = f.dequantize(f.tensor("q8_0"));
  for (int j = 0; j < 16; ++j) {
    EXPECT_EQ(a[j], 0.5f * static_cast<float>(j - 8));
    EXPECT_EQ(a[j + 16], 0.5f * static_cast<float>(7 - j));
    EXPECT_EQ(b[j], 0.25f * static_cast<float>(j) - 1.0f);
    EXPECT_EQ(b[j + 16], 0.25f * static_cast<float>(15 - j) - 1.0f);
  }
  for (int j = 0; j < 32; ++j) EXPECT_EQ(c[j], 2.0f * static_cast<float>(j - 16));
  const auto d = f.dequantize(f.tensor("q6_k"));
  for (int i = 0; i < 256; ++i) EXPECT_EQ(d[i], 0.5f * static_cast<float>(sc6(i / 16) * (q6(i) - 32))) << i;
  auto foreign = f.tensor("q8_0");  // a record that does not describe this file's data
  foreign.offset += 1 << 20;
  EXPECT_THROW(f.dequantize(foreign), gguf_error);
  try {
    f.dequantize(f.tensor("q4_k"));
    FAIL() << "Q4_K dequantised";
  } catch (const gguf_error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("'q4_k' of type Q4_K"), std::string::npos) << msg;
  }
}


// ---- issue 15: what fuzzing found --------------------------------------------------------------

// A complete 1-layer llama (every tensor F32): n_embd 8, 2 heads of 4, 1 KV head, n_ff 16, a
// 4-token vocabulary. `skip` leaves tensors out; `n_ff` overrides the header's (the tensors stay
// 16 wide), `vocab` the embedding's rows.
std::string tiny_llama(const std::vector<std::string>& skip = {}, uint32_t n_ff = 16, uint64_t vocab = 4,
                       uint32_t blocks = 1) {
  const std::vector<kv_entry> kvs = {kv_str("general.architecture", "llama"),
                                     kv<uint32_t>("llama.block_count", U32, blocks),
                                     kv<uint32_t>("llama.embedding_length", U32, 8),
                                     kv<uint32_t>("llama.feed_forward_length", U32, n_ff),
                                     kv<uint32_t>("llama.attention.head_count", U32, 2),
                                     kv<uint32_t>("llama.attention.head_count_kv", U32, 1),
                                     kv<uint32_t>("llama.context_length", U32, 64)};
  auto f32 = [](std::vector<uint64_t> dims) {
    uint64_t n = 1;
    for (auto d : dims) n *= d;
    return std::string(static_cast<size_t>(n) * 4, '\0');
  };
  std::vector<tensor_entry> ts;
  const std::vector<std::pair<std::string, std::vector<uint64_t>>> shapes = {
      {"token_embd.weight", {8, vocab}},      {"output_norm.weight", {8}},
      {"blk.0.attn_norm.weight", {8}},        {"blk.0.ffn_norm.weight", {8}},
      {"blk.0.attn_q.weight", {8, 8}},        {"blk.0.attn_k.weight", {8, 4}},
      {"blk.0.attn_v.weight", {8, 4}},        {"blk.0.attn_output.weight", {8, 8}},
      {"blk.0.ffn_gate.weight", {8, 16}},     {"blk.0.ffn_up.weight", {8, 16}},
      {"blk.0.ffn_down.weight", {16, 8}}};
  for (const auto& [name, dims] : shapes) {
    if (std::find(skip.begin(), skip.end(), name) != skip.end()) continue;
    ts.push_back({name, ggml_type::F32, dims, f32(dims)});
  }
  return build_gguf(kvs, ts);
}

// The model constructor's error for `content`, "" when it loads.
std::string model_error(const temp_dir& dir, const std::string& content) {
  try {
    const gguf_file f(dir.write("m.gguf", content));
    const kvhost::model m(f);
    return "";
  } catch (const std::exception& e) {
    return e.what();
  }
}

TEST(GgufFuzzRegressions, TinyModelLoads) {
  const temp_dir dir;
  EXPECT_EQ(model_error(dir, tiny_llama()), "");
}

// Was: an exception thrown inside Eigen's comma initialiser, which aborts in a build with
// assertions (this test's Debug/ASan build); now a clean error in every build type.
TEST(GgufFuzzRegressions, MissingTensorsAreCleanErrors) {
  const temp_dir dir;
  for (const char* t : {"blk.0.attn_v.weight", "blk.0.ffn_gate.weight", "blk.0.ffn_up.weight"}) {
    const std::string e = model_error(dir, tiny_llama({t}));
    EXPECT_NE(e.find(std::string("tensor '") + t + "' not found"), std::string::npos) << t << ": " << e;
  }
}

// Was: a 0-element tensor reached memcpy(nullptr, ..., 0); a vocabulary of 0 was accepted.
TEST(GgufFuzzRegressions, ZeroElementTensorsAndEmptyVocabularyAreRejected) {
  const temp_dir dir;
  const auto zero = open_error(dir, build_gguf({}, {{"empty", ggml_type::F32, {0}, ""}}));
  EXPECT_NE(zero.find("tensor 'empty' has a dimension of 0"), std::string::npos) << zero;
  const auto zero2 = open_error(dir, build_gguf({}, {{"e2", ggml_type::F32, {4, 0}, ""}}));
  EXPECT_NE(zero2.find("dimension of 0"), std::string::npos) << zero2;
  const auto vocab = model_error(dir, tiny_llama({}, 16, 0));
  EXPECT_NE(vocab.find("dimension of 0"), std::string::npos) << vocab;
}

// Was: signed overflow of 2 * n_ff (and q + 2 kv rows) on a crafted header.
TEST(GgufFuzzRegressions, HugeSizesInTheHeaderAreRejectedWithoutOverflow) {
  const temp_dir dir;
  const auto e = model_error(dir, tiny_llama({}, 0x7fffffffu));
  EXPECT_NE(e.find("feed_forward_length 2147483647 is too large"), std::string::npos) << e;
}

// Found by the long fuzzing run: block_count 2^31 - 1 in a 3 KB file made the constructor
// allocate its layer table (~100 GB) before looking for the layers' tensors.
TEST(GgufFuzzRegressions, BlockCountIsCheckedAgainstTheTensorTable) {
  const temp_dir dir;
  const auto e = model_error(dir, tiny_llama({}, 16, 4, 0x7fffffffu));
  EXPECT_NE(e.find("block_count 2147483647 needs 19327352823 layer tensors; the file has 11"), std::string::npos) << e;
  const auto two = model_error(dir, tiny_llama({}, 16, 4, 2));
  EXPECT_NE(two.find("block_count 2 needs 18 layer tensors"), std::string::npos) << two;
}

}  // namespace
