// JSON reader/writer, profile load/save, import of the published CompressKV / HeadKV artefacts.
#include <gtest/gtest.h>

#include "expect_error.hpp"

#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include <unistd.h>

#include "kvtrim/profile/import.hpp"
#include "kvtrim/profile/json.hpp"
#include "kvtrim/profile/profile.hpp"

namespace fs = std::filesystem;
using kvtrim::error;
namespace json = kvtrim::json;

namespace {

std::string fixture(const std::string& name) { return std::string(KVTRIM_SOURCE_DIR) + "/tests/fixtures/" + name; }

// The error message of `f`, or "" if it did not throw kvtrim::error.

bool same_bits(double a, double b) { return std::memcmp(&a, &b, sizeof a) == 0; }

// A fresh, empty directory under the system temp dir, removed at scope exit.
struct temp_dir {
  fs::path path;
  temp_dir() {
    static int n = 0;
    path = fs::temp_directory_path() /
           ("kvtrim_profile_test_" + std::to_string(::getpid()) + "_" + std::to_string(n++));
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~temp_dir() { fs::remove_all(path); }
  std::vector<std::string> entries() const {
    std::vector<std::string> out;
    for (const auto& e : fs::directory_iterator(path)) out.push_back(e.path().filename().string());
    return out;
  }
};

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

kvtrim::profile tiny_profile() {
  kvtrim::profile p;
  p.model = "tiny-test-model";
  p.model_sha256 = std::string(64, 'a');
  p.layers = 3;
  p.q_heads = 4;
  p.kv_heads = 2;
  p.semantic_retrieval = {{3, 1, 4, 2}, {2, 4, 1, 3}, {1, 2, 3, 4}};
  p.retrieval_reasoning = {{0.1, 1.0 / 3.0, 1e-300, 0.0}, {5e-324, 2.5, 0.2, 0.3}, {1e300, 0.7, 0.8, 0.9}};
  p.layer_error = {0.375, 0.25, 0.375};
  p.provenance = {{"data", "needle \"probe\" set"}, {"date", "2025-01-01"}, {"tool", "kvtrim test"}};
  return p;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// JSON

TEST(JsonTest, ParsesEveryType) {
  const json::value v = json::parse(R"( {"a": [1, -2.5e3, true, false, null, "x"], "b": {}, "c": 0} )");
  ASSERT_TRUE(v.is_object());
  const auto& a = v.at("a").as_array();
  ASSERT_EQ(a.size(), 6u);
  EXPECT_EQ(a[0].as_number(), 1.0);
  EXPECT_EQ(a[1].as_number(), -2500.0);
  EXPECT_TRUE(a[2].as_bool());
  EXPECT_FALSE(a[3].as_bool());
  EXPECT_TRUE(a[4].is_null());
  EXPECT_EQ(a[5].as_string(), "x");
  EXPECT_TRUE(v.at("b").as_object().empty());
  EXPECT_EQ(v.find("missing"), nullptr);
  EXPECT_ERROR_HAS(v.at("missing"), "missing key 'missing'");
  EXPECT_ERROR_HAS(v.at("a").as_string(), "expected string, got array");
}

TEST(JsonTest, DoublesRoundTripBitExact) {
  std::vector<double> xs = {0.1,
                            1.0 / 3.0,
                            -0.0,
                            1e-300,
                            5e-324,  // smallest denormal
                            2.2250738585072014e-308,
                            std::numeric_limits<double>::max(),
                            -std::numeric_limits<double>::max(),
                            123456789012345678.0,
                            0.30000000000000004};
  std::mt19937_64 rng(7);
  while (xs.size() < 2000) {
    const std::uint64_t bits = rng();
    double d;
    std::memcpy(&d, &bits, sizeof d);
    if (std::isfinite(d)) xs.push_back(d);
  }
  json::array_t a;
  for (double x : xs) a.emplace_back(x);
  for (int indent : {-1, 2}) {
    const json::value back = json::parse(json::dump(json::value(a), indent));
    ASSERT_EQ(back.as_array().size(), xs.size());
    for (std::size_t i = 0; i < xs.size(); ++i)
      ASSERT_TRUE(same_bits(back.as_array()[i].as_number(), xs[i])) << i << ": " << xs[i];
  }
  EXPECT_EQ(json::dump(json::value(0.1)), "0.10000000000000001");  // %.17g
  EXPECT_EQ(json::dump(json::value(30)), "30");
  EXPECT_EQ(json::dump(json::value(-0.0)), "-0");
}

TEST(JsonTest, DumpIsDeterministicWithSortedKeys) {
  json::value a, b;
  a.set("zeta", 1);
  a.set("alpha", json::array_t{1, 2});
  a.set("mid", "x");
  b.set("mid", "x");
  b.set("alpha", json::array_t{1, 2});
  b.set("zeta", 1);
  EXPECT_EQ(json::dump(a), R"({"alpha":[1,2],"mid":"x","zeta":1})");
  EXPECT_EQ(json::dump(a), json::dump(b));
  EXPECT_EQ(a, b);
  b.set("zeta", 2);  // replaces
  EXPECT_NE(a, b);
  EXPECT_EQ(json::dump(b), R"({"alpha":[1,2],"mid":"x","zeta":2})");
  EXPECT_EQ(json::dump(a, 2), "{\n  \"alpha\": [1, 2],\n  \"mid\": \"x\",\n  \"zeta\": 1\n}");
  json::value nested = json::parse(R"({"m": [[1, 2], []], "e": {}, "l": []})");
  EXPECT_EQ(json::dump(nested, 2), "{\n  \"e\": {},\n  \"l\": [],\n  \"m\": [\n    [1, 2],\n    []\n  ]\n}");
  EXPECT_ERROR_HAS(json::value(json::object_t{{"k", 1}, {"k", 2}}), "duplicate object key 'k'");
}

TEST(JsonTest, StringEscapesAndUtf8) {
  const json::value v = json::parse(R"("\u00e9\n\t\"\\\/\b\f\r\ud83d\ude00 é")");
  EXPECT_EQ(v.as_string(), "\xC3\xA9\n\t\"\\/\b\f\r\xF0\x9F\x98\x80 \xC3\xA9");
  // Written back: control characters escaped, UTF-8 kept as is; and it reads back equal.
  const std::string out = json::dump(v);
  EXPECT_EQ(out, "\"\xC3\xA9\\n\\t\\\"\\\\/\\b\\f\\r\xF0\x9F\x98\x80 \xC3\xA9\"");
  EXPECT_EQ(json::parse(out), v);
  EXPECT_EQ(json::dump(json::value(std::string("\x01", 1))), "\"\\u0001\"");
  EXPECT_ERROR_HAS(json::dump(json::value(std::string("\xC3\x28"))), "not valid UTF-8");
  EXPECT_ERROR_HAS(json::dump(json::value(std::nan(""))), "non-finite");
  EXPECT_ERROR_HAS(json::dump(json::value(HUGE_VAL)), "non-finite");
}

TEST(JsonTest, MalformedInputRejectedWithPosition) {
  struct bad {
    const char* text;
    const char* expect;
  };
  const bad cases[] = {
      {"", "<input>:1:1: unexpected end of input"},
      {"   ", "1:4: unexpected end of input"},
      {"[1, 2", "1:6: unexpected end of input inside an array"},
      {"{\"a\": 1", "1:8: unexpected end of input inside an object"},
      {"{\"a\"", "expected ':' after object key 'a'"},
      {"\"abc", "1:5: unexpected end of input inside a string"},
      {"{\"a\": 1} x", "1:10: trailing characters"},
      {"[1] [2]", "1:5: trailing characters"},
      {"\"\\x\"", "1:2: invalid escape '\\x'"},
      {"\"\\u12G4\"", "1:6: invalid hex digit 'G'"},
      {"\"\\u12\"", "1:4: truncated \\u escape"},
      {"\"\\ud800\"", "1:2: high surrogate not followed by a \\u low surrogate"},
      {"\"\\ud800\\u0041\"", "high surrogate not followed by a low surrogate"},
      {"\"\\udc00\"", "1:2: lone low surrogate"},
      {"01", "1:1: leading zeros"},
      {"-", "1:2: expected a digit"},
      {"1.", "1:3: expected a digit after the decimal point"},
      {"1e", "1:3: expected a digit in the exponent"},
      {"+1", "1:1: unexpected character '+'"},
      {".5", "1:1: unexpected character '.'"},
      {"1e400", "1:1: number 1e400 is out of the range of a double"},
      {"NaN", "1:1: unexpected character 'N'"},
      {"Infinity", "unexpected character 'I'"},
      {"tru", "1:1: invalid literal, expected 'true'"},
      {"nul", "invalid literal, expected 'null'"},
      {"[1,]", "1:4: unexpected character ']'"},
      {"[1 2]", "1:4: expected ',' or ']'"},
      {"{\"a\" 1}", "expected ':' after object key 'a'"},
      {"{a: 1}", "1:2: expected a string key"},
      {"{\"a\": 1,}", "1:9: expected a string key"},
      {"{\"a\": 1 \"b\": 2}", "1:9: expected ',' or '}'"},
      {"{\"a\": 1, \"a\": 2}", "1:10: duplicate object key 'a'"},
      {"\"a\x01" "b\"", "1:3: unescaped control character 0x01"},
      {"\"\xC3\x28\"", "1:2: invalid UTF-8 byte 0xC3"},
      {"\"\xC0\xAF\"", "invalid UTF-8 byte 0xC0"},       // overlong '/'
      {"\"\xED\xA0\x80\"", "invalid UTF-8 byte 0xED"},   // encoded surrogate
      {"\"\xF4\x90\x80\x80\"", "invalid UTF-8 byte 0xF4"},  // above U+10FFFF
      {"\"\xE2\x82\"", "invalid UTF-8"},                    // truncated sequence
      {"{\n  \"a\": [1,\n  2,,]\n}", "<input>:3:5: unexpected character ','"},
      {"[\"\xC3\xA9\", x]", "1:7: unexpected character 'x'"},  // columns count code points
  };
  for (const bad& c : cases) {
    SCOPED_TRACE(c.text);
    EXPECT_ERROR_HAS(json::parse(c.text), c.expect);
  }
  EXPECT_ERROR_HAS(json::parse("[", "my.json"), "kvtrim: json: my.json:1:2:");
}

TEST(JsonTest, DepthLimit) {
  const std::string ok = std::string(256, '[') + std::string(256, ']');
  EXPECT_NO_THROW(json::parse(ok));
  const std::string deep = std::string(257, '[') + std::string(257, ']');
  EXPECT_ERROR_HAS(json::parse(deep), "1:257: nesting deeper than 256 levels");
  const std::string hostile(100000, '[');  // must fail cleanly, not overflow the stack
  EXPECT_ERROR_HAS(json::parse(hostile), "nesting deeper than 256 levels");
  EXPECT_NO_THROW(json::parse("{\"a\":[[1]]}", "", 3));
  EXPECT_ERROR_HAS(json::parse("{\"a\":[[[1]]]}", "", 3), "nesting deeper than 3 levels");
  EXPECT_ERROR_HAS(json::parse("1", "", 0), "max_depth = 0");
}

TEST(JsonTest, ParseSequence) {
  const auto vs = json::parse_sequence("{\"a\": 1}\n{\"b\": [2]}\n\n{}");
  ASSERT_EQ(vs.size(), 3u);
  EXPECT_EQ(vs[0].at("a").as_number(), 1.0);
  EXPECT_EQ(vs[1].at("b").as_array()[0].as_number(), 2.0);
  EXPECT_TRUE(json::parse_sequence(" \n ").empty());
  EXPECT_ERROR_HAS(json::parse_sequence("{}\n{\"a\": }"), "2:7: unexpected character '}'");
  // A leading UTF-8 byte order mark is ignored.
  EXPECT_EQ(json::parse("\xEF\xBB\xBF[1]").as_array().size(), 1u);
}

// ---------------------------------------------------------------------------------------------
// Profiles

TEST(ProfileTest, SaveLoadRoundTripIsBitExact) {
  temp_dir dir;
  const kvtrim::profile p = tiny_profile();
  const std::string path = (dir.path / "p.json").string();
  kvtrim::save_profile(p, path);
  const kvtrim::profile q = kvtrim::load_profile(path);
  EXPECT_EQ(q.model, p.model);
  EXPECT_EQ(q.model_sha256, p.model_sha256);
  EXPECT_EQ(q.layers, 3);
  EXPECT_EQ(q.q_heads, 4);
  EXPECT_EQ(q.kv_heads, 2);
  EXPECT_EQ(q.provenance, p.provenance);
  ASSERT_EQ(q.retrieval_reasoning.size(), 3u);
  for (int l = 0; l < 3; ++l)
    for (int h = 0; h < 4; ++h) {
      EXPECT_TRUE(same_bits(q.retrieval_reasoning[l][h], p.retrieval_reasoning[l][h]));
      EXPECT_TRUE(same_bits(q.semantic_retrieval[l][h], p.semantic_retrieval[l][h]));
    }
  EXPECT_EQ(q.layer_error, p.layer_error);
  EXPECT_EQ(dir.entries(), std::vector<std::string>{"p.json"});  // no temp file left behind
  // Saving again gives the same bytes (deterministic key order and number format).
  const std::string first = slurp(path);
  kvtrim::save_profile(q, path);
  EXPECT_EQ(slurp(path), first);
}

TEST(ProfileTest, ExampleFixtureMatchesWhatSaveWrites) {
  // tests/fixtures/profile_tiny.json is the example of docs/PROFILE.md.
  const kvtrim::profile q = kvtrim::load_profile(fixture("profile_tiny.json"));
  kvtrim::profile p;
  p.model = "tiny-test-model";
  p.layers = 3;
  p.q_heads = 4;
  p.kv_heads = 2;
  p.semantic_retrieval = {{3, 1, 4, 2}, {2, 4, 1, 3}, {1, 2, 3, 4}};
  p.retrieval_reasoning = {{0.75, 0.0625, 1, 0.375}, {0, 0.375, 0.5, 0.03125}, {0.5, 0.125, 0.875, 0}};
  p.layer_error = {0.375, 0.25, 0.375};
  p.provenance = {{"layer_error", "CompressKV layer_score tiny_layer_score.jsonl (avg_score)"},
                  {"retrieval_reasoning", "HeadKV scores tiny_retrieval_reasoning_heads.json (mean of trials)"},
                  {"semantic_retrieval", "CompressKV head_idx tiny_head_idx.json (score = q_heads - rank)"}};
  EXPECT_EQ(q.semantic_retrieval, p.semantic_retrieval);
  EXPECT_EQ(q.retrieval_reasoning, p.retrieval_reasoning);
  EXPECT_EQ(q.layer_error, p.layer_error);
  EXPECT_EQ(q.provenance, p.provenance);
  EXPECT_TRUE(q.model_sha256.empty());
  EXPECT_EQ(json::dump(kvtrim::to_json(p), 2) + "\n", slurp(fixture("profile_tiny.json")));
}

TEST(ProfileTest, OptionalFieldsMayBeAbsent) {
  kvtrim::profile p;
  p.layers = 2;
  p.q_heads = 2;
  p.kv_heads = 1;
  EXPECT_FALSE(p.has_semantic_retrieval());
  EXPECT_FALSE(p.has_retrieval_reasoning());
  EXPECT_FALSE(p.has_layer_error());
  const kvtrim::profile q = kvtrim::profile_from_json(kvtrim::to_json(p));
  EXPECT_FALSE(q.has_semantic_retrieval() || q.has_retrieval_reasoning() || q.has_layer_error());
  p.layer_error = {1, 0};
  EXPECT_TRUE(kvtrim::profile_from_json(kvtrim::to_json(p)).has_layer_error());
  const json::value j = json::parse(R"({"format": "kvtrim-profile", "version": 1, "model": "m",
                                        "shape": {"layers": 1, "q_heads": 2, "kv_heads": 2}})");
  EXPECT_EQ(kvtrim::profile_from_json(j).q_heads, 2);
}

TEST(ProfileTest, FailedWriteLeavesNoFile) {
  temp_dir dir;
  const kvtrim::profile p = tiny_profile();
  // The directory does not exist: nothing at all may be created.
  const fs::path missing = dir.path / "no_such_dir" / "p.json";
  EXPECT_ERROR_HAS(kvtrim::save_profile(p, missing.string()), "cannot create");
  EXPECT_FALSE(fs::exists(missing));
  EXPECT_FALSE(fs::exists(missing.parent_path()));
  EXPECT_TRUE(dir.entries().empty());
  // The rename fails (a directory sits at the path): the temp file is removed, nothing else changes.
  fs::create_directory(dir.path / "taken");
  EXPECT_ERROR_HAS(kvtrim::save_profile(p, (dir.path / "taken").string()), "cannot rename");
  EXPECT_EQ(dir.entries(), std::vector<std::string>{"taken"});
  EXPECT_TRUE(fs::is_empty(dir.path / "taken"));
  // An invalid profile is rejected before anything is written, and an old file stays whole.
  const std::string path = (dir.path / "p.json").string();
  kvtrim::save_profile(p, path);
  const std::string before = slurp(path);
  kvtrim::profile bad = p;
  bad.layer_error = {1, 2};
  EXPECT_ERROR_HAS(kvtrim::save_profile(bad, path), "layer_error has 2 entries, expected layers = 3");
  EXPECT_EQ(slurp(path), before);
  EXPECT_EQ(dir.entries().size(), 2u);
}

TEST(ProfileTest, ShapeMismatchRejected) {
  const kvtrim::profile p = tiny_profile();
  kvtrim::model_shape same{3, 4, 2, 64, 0};
  EXPECT_NO_THROW(p.check_matches(same));
  EXPECT_ERROR_HAS(p.check_matches(kvtrim::model_shape{30, 9, 3, 64, 0}),
                   "profile for model 'tiny-test-model' has layers = 3, q_heads = 4, kv_heads = 2 but the model "
                   "has layers = 30, q_heads = 9, kv_heads = 3");
  EXPECT_ERROR_HAS(p.check_matches(kvtrim::model_shape{3, 4, 1, 64, 0}), "kv_heads = 1");
  EXPECT_ERROR_HAS(p.check_matches(kvtrim::model_shape{3, 8, 2, 64, 0}), "q_heads = 8");
}

TEST(ProfileTest, ValidateRejectsBadValues) {
  auto with = [](auto edit) {
    kvtrim::profile p = tiny_profile();
    edit(p);
    return p;
  };
  EXPECT_NO_THROW(tiny_profile().validate());
  EXPECT_ERROR_HAS(with([](auto& p) { p.layers = 0; }).validate(), "layers = 0 must be > 0");
  EXPECT_ERROR_HAS(with([](auto& p) { p.kv_heads = 3; }).validate(), "q_heads = 4 must be a positive multiple of kv_heads = 3");
  EXPECT_ERROR_HAS(with([](auto& p) { p.kv_heads = 0; }).validate(), "kv_heads = 0");
  EXPECT_ERROR_HAS(with([](auto& p) { p.semantic_retrieval.pop_back(); }).validate(),
                   "semantic_retrieval has 2 layers, expected 3");
  EXPECT_ERROR_HAS(with([](auto& p) { p.retrieval_reasoning[1].push_back(1); }).validate(),
                   "retrieval_reasoning[1] has 5 heads, expected q_heads = 4");
  EXPECT_ERROR_HAS(with([](auto& p) { p.semantic_retrieval[2][3] = -1; }).validate(),
                   "semantic_retrieval[2][3] = -1 must be finite and >= 0");
  EXPECT_ERROR_HAS(with([](auto& p) { p.retrieval_reasoning[0][0] = std::nan(""); }).validate(),
                   "retrieval_reasoning[0][0]");
  EXPECT_ERROR_HAS(with([](auto& p) { p.layer_error = {0, 0, 0}; }).validate(), "layer_error is all zero");
  EXPECT_ERROR_HAS(with([](auto& p) { p.layer_error[1] = -0.5; }).validate(), "layer_error[1] = -0.5");
  EXPECT_ERROR_HAS(with([](auto& p) { p.model_sha256 = "abc"; }).validate(), "model_sha256 = 'abc'");
  EXPECT_ERROR_HAS(with([](auto& p) { p.model_sha256 = std::string(63, 'a') + "g"; }).validate(), "64 hex digits");
}

TEST(ProfileTest, LoadRejectsMalformedFiles) {
  temp_dir dir;
  auto load_text = [&](const std::string& text) {
    const std::string path = (dir.path / "bad.json").string();
    std::ofstream(path) << text;
    return kvtrim::load_profile(path);
  };
  const std::string good = json::dump(kvtrim::to_json(tiny_profile()), 2);
  EXPECT_NO_THROW(load_text(good));
  EXPECT_ERROR_HAS(load_text(good.substr(0, good.size() / 2)), "bad.json:");  // truncated: json error names file
  EXPECT_ERROR_HAS(kvtrim::load_profile((dir.path / "absent.json").string()), "cannot open");
  EXPECT_ERROR_HAS(kvtrim::load_profile(dir.path.string()), "it is a directory");
  auto edited = [&](const std::string& key, json::value v) {
    json::value j = json::parse(good);
    j.set(key, std::move(v));
    return json::dump(j);
  };
  EXPECT_ERROR_HAS(load_text(edited("semantic_retreival", json::array_t{})), "unknown profile field \"semantic_retreival\"");
  EXPECT_ERROR_HAS(load_text(edited("version", 2)), "profile format version 2 is newer than this kvtrim reads (1)");
  EXPECT_ERROR_HAS(load_text(edited("version", 1.5)), "version = 1.5 must be an integer");
  EXPECT_ERROR_HAS(load_text(edited("format", "other")), "\"format\" must be \"kvtrim-profile\"");
  EXPECT_ERROR_HAS(load_text(edited("model", 3)), "\"model\" must be a string");
  EXPECT_ERROR_HAS(load_text(edited("layer_error", json::array_t{1, "x", 1})), "layer_error[1] must be a number");
  EXPECT_ERROR_HAS(load_text(edited("layer_error", json::array_t{1, 1})), "layer_error has 2 entries, expected layers = 3");
  EXPECT_ERROR_HAS(load_text(edited("provenance", json::value(json::object_t{{"a", 1}}))), "provenance \"a\" must be a string");
  EXPECT_ERROR_HAS(load_text(edited("shape", json::value(json::object_t{{"layers", 3}, {"q_heads", 4}}))),
                   "shape: missing \"kv_heads\"");
  EXPECT_ERROR_HAS(load_text(edited("shape", json::value(json::object_t{{"layers", 3}, {"q_heads", 4}, {"kv_heads", 2}, {"d", 1}}))),
                   "unknown shape field \"d\"");
  EXPECT_ERROR_HAS(load_text(edited("shape", json::value(json::object_t{{"layers", -3}, {"q_heads", 4}, {"kv_heads", 2}}))),
                   "shape.layers = -3 must be an integer in [1,");
  EXPECT_ERROR_HAS(load_text("[1, 2]"), "a profile must be a JSON object, got array");
}

// ---------------------------------------------------------------------------------------------
// Import of the published artefacts

TEST(ImportTest, CompressKVHeadIdxReproducesTheOrder) {
  const auto s = kvtrim::read_compresskv_head_idx(fixture("tiny_head_idx.json"), 3, 4);
  // {"0": [2, 0, 3, 1], ...}: rank r scores q_heads - r = 4, 3, 2, 1.
  const std::vector<std::vector<double>> expect = {{3, 1, 4, 2}, {2, 4, 1, 3}, {1, 2, 3, 4}};
  EXPECT_EQ(s, expect);
  // A list that names only the best heads: the rest score 0, below every listed head.
  const auto top = kvtrim::parse_compresskv_head_idx(R"({"0": [1], "1": [3, 0]})", 2, 4);
  EXPECT_EQ(top, (std::vector<std::vector<double>>{{0, 4, 0, 0}, {3, 0, 0, 4}}));
}

TEST(ImportTest, CompressKVHeadIdxRejectsBadIds) {
  auto parse = [](const char* text) { return kvtrim::parse_compresskv_head_idx(text, 2, 4, "hi.json"); };
  EXPECT_ERROR_HAS(parse(R"({"0": [0], "1": [1], "2": [2]})"), "hi.json: layer key \"2\" must be a layer id in [0, 2)");
  EXPECT_ERROR_HAS(parse(R"({"0": [0], "x": [1]})"), "layer key \"x\"");
  EXPECT_ERROR_HAS(parse(R"({"0": [0], "01": [1]})"), "layer key \"01\"");
  EXPECT_ERROR_HAS(parse(R"({"0": [0], "-1": [1]})"), "layer key \"-1\"");
  EXPECT_ERROR_HAS(parse(R"({"0": [0, 4], "1": [1]})"), "layer \"0\" rank 1: head id 4 must be an integer in [0, 4)");
  EXPECT_ERROR_HAS(parse(R"({"0": [1.5], "1": [1]})"), "head id 1.5");
  EXPECT_ERROR_HAS(parse(R"({"0": ["1"], "1": [1]})"), "head id \"1\"");
  EXPECT_ERROR_HAS(parse(R"({"0": [2, 2], "1": [1]})"), "layer \"0\" lists head 2 twice");
  EXPECT_ERROR_HAS(parse(R"({"0": [0]})"), "layer \"1\" is missing");
  EXPECT_ERROR_HAS(parse(R"({"0": [], "1": [1]})"), "layer \"0\" must map to 1..4 head ids");
  EXPECT_ERROR_HAS(parse(R"({"0": [0, 1, 2, 3, 0], "1": [1]})"), "layer \"0\" must map to 1..4 head ids");
  EXPECT_ERROR_HAS(parse(R"([[0], [1]])"), "expected an object");
  EXPECT_ERROR_HAS(kvtrim::read_compresskv_head_idx(fixture("tiny_head_idx.json"), 3, 3), "layer \"0\" must map to 1..3 head ids");
  EXPECT_ERROR_HAS(kvtrim::read_compresskv_head_idx(fixture("tiny_head_idx.json"), 2, 4), "layer key \"2\"");
}

TEST(ImportTest, CompressKVLayerScore) {
  std::string how;
  // The published layout: one pretty-printed object; avg_score is used as written.
  EXPECT_EQ(kvtrim::read_compresskv_layer_score(fixture("tiny_layer_score.jsonl"), 3, &how),
            (std::vector<double>{0.375, 0.25, 0.375}));
  EXPECT_EQ(how, "avg_score");
  // avg_score is taken verbatim (not recomputed from the dataset rows), from the LAST object that has one.
  const char* two = "{\"a\": [1, 1, 1], \"avg_score\": [0.5, 0.25, 0.25]}\n{\"avg_score\": [0.125, 0.5, 0.375]}\n";
  EXPECT_EQ(kvtrim::parse_compresskv_layer_score(two, 3), (std::vector<double>{0.125, 0.5, 0.375}));
  // The generator's raw output (one dataset per line, no avg_score): the mean of the L1-normalised rows.
  EXPECT_EQ(kvtrim::read_compresskv_layer_score(fixture("tiny_layer_score_raw.jsonl"), 3, &how),
            (std::vector<double>{0.375, 0.25, 0.375}));
  EXPECT_EQ(how, "mean of 2 dataset rows (no avg_score)");
  // A dataset line repeated (a re-run appended): the later one wins.
  EXPECT_EQ(kvtrim::parse_compresskv_layer_score("{\"a\": [1, 0]}\n{\"b\": [0, 1]}\n{\"a\": [0, 2]}\n", 2),
            (std::vector<double>{0.0, 1.0}));
}

TEST(ImportTest, CompressKVLayerScoreRejectsBadFiles) {
  auto parse = [](const char* text, int layers = 3) { return kvtrim::parse_compresskv_layer_score(text, layers, "ls.jsonl"); };
  EXPECT_ERROR_HAS(kvtrim::read_compresskv_layer_score(fixture("tiny_layer_score.jsonl"), 4),
                   "\"avg_score\" has 3 layers, expected 4");
  EXPECT_ERROR_HAS(parse("{\"hotpotqa\": [1, 1], \"avg_score\": [1, 1, 1]}"), "\"hotpotqa\" has 2 layers, expected 3");
  EXPECT_ERROR_HAS(parse("{\"avg_score\": [1, 2]}"), "ls.jsonl: object 1 \"avg_score\" has 2 layers, expected 3");
  EXPECT_ERROR_HAS(parse("{\"avg_score\": [1, -2, 1]}"), "\"avg_score\"[1] = -2 must be >= 0");
  EXPECT_ERROR_HAS(parse("{\"avg_score\": [0, 0, 0]}"), "avg_score is all zero");
  EXPECT_ERROR_HAS(parse("{\"avg_score\": [1, \"x\", 1]}"), "must be a number");
  EXPECT_ERROR_HAS(parse("[1, 2, 3]"), "value 1 must be an object, got array");
  EXPECT_ERROR_HAS(parse(""), "no JSON object");
  EXPECT_ERROR_HAS(parse("{}"), "no avg_score and no dataset rows");
  EXPECT_ERROR_HAS(parse("{\"a\": [1, 1, 1]}\n{\"b\": [1, 1"), "ls.jsonl:2:");
}

TEST(ImportTest, HeadKVRetrievalReasoningScores) {
  const auto s = kvtrim::read_headkv_scores(fixture("tiny_retrieval_reasoning_heads.json"), 3, 4);
  // Mean of each head's trials; "2-3": [] gives 0.
  const std::vector<std::vector<double>> expect = {
      {0.75, 0.0625, 1.0, 0.375}, {0.0, 0.375, 0.5, 0.03125}, {0.5, 0.125, 0.875, 0.0}};
  EXPECT_EQ(s, expect);
  // Heads absent from the file score 0.
  EXPECT_EQ(kvtrim::parse_head_trial_scores(R"({"1-1": [0.5, 1.5]})", 2, 2),
            (std::vector<std::vector<double>>{{0, 0}, {0, 1.0}}));
}

TEST(ImportTest, HeadKVRejectsBadIds) {
  auto parse = [](const char* text) { return kvtrim::parse_head_trial_scores(text, 3, 4, "rr.json"); };
  EXPECT_ERROR_HAS(parse(R"({"3-0": [1]})"), "rr.json: key \"3-0\" must be \"<layer>-<head>\" with layer in [0, 3) and head in [0, 4)");
  EXPECT_ERROR_HAS(parse(R"({"0-4": [1]})"), "key \"0-4\"");
  EXPECT_ERROR_HAS(parse(R"({"0_1": [1]})"), "key \"0_1\"");
  EXPECT_ERROR_HAS(parse(R"({"0-1-2": [1]})"), "key \"0-1-2\"");
  EXPECT_ERROR_HAS(parse(R"({"a-b": [1]})"), "key \"a-b\"");
  EXPECT_ERROR_HAS(parse(R"({"-1": [1]})"), "key \"-1\"");
  EXPECT_ERROR_HAS(parse(R"({"0-1": [0.5, -1]})"), "\"0-1\" trial 1: -1 must be a number >= 0");
  EXPECT_ERROR_HAS(parse(R"({"0-1": ["x"]})"), "\"0-1\" trial 0: \"x\"");
  EXPECT_ERROR_HAS(parse(R"({"0-1": 0.5})"), "\"0-1\" must map to an array");
  EXPECT_ERROR_HAS(parse(R"({})"), "no heads in the file");
  EXPECT_ERROR_HAS(parse(R"({"0-1": [NaN]})"), "unexpected character 'N'");  // Python's NaN is not JSON
  EXPECT_ERROR_HAS(kvtrim::read_headkv_scores(fixture("tiny_retrieval_reasoning_heads.json"), 3, 3), "key \"");
}

TEST(ImportTest, ImportProfileCombinesTheArtefacts) {
  kvtrim::import_sources src;
  src.compresskv_head_idx = fixture("tiny_head_idx.json");
  src.compresskv_layer_score = fixture("tiny_layer_score.jsonl");
  src.headkv_scores = fixture("tiny_retrieval_reasoning_heads.json");
  const kvtrim::profile p = kvtrim::import_profile(src, 3, 4, 2, "tiny");
  EXPECT_EQ(p.model, "tiny");
  EXPECT_EQ(p.semantic_retrieval, (std::vector<std::vector<double>>{{3, 1, 4, 2}, {2, 4, 1, 3}, {1, 2, 3, 4}}));
  EXPECT_EQ(p.layer_error, (std::vector<double>{0.375, 0.25, 0.375}));
  EXPECT_EQ(p.retrieval_reasoning[0], (std::vector<double>{0.75, 0.0625, 1.0, 0.375}));
  EXPECT_NE(p.provenance.at("semantic_retrieval").find("tiny_head_idx.json"), std::string::npos);
  EXPECT_NE(p.provenance.at("layer_error").find("(avg_score)"), std::string::npos);
  EXPECT_NE(p.provenance.at("retrieval_reasoning").find("mean of trials"), std::string::npos);
  // One source is enough; none is an error; a shape that disagrees with the files is rejected.
  kvtrim::import_sources only;
  only.headkv_scores = src.headkv_scores;
  const kvtrim::profile q = kvtrim::import_profile(only, 3, 4, 4);
  EXPECT_TRUE(q.has_retrieval_reasoning() && !q.has_semantic_retrieval() && !q.has_layer_error());
  EXPECT_ERROR_HAS(kvtrim::import_profile(kvtrim::import_sources{}, 3, 4, 2), "no source file given");
  EXPECT_ERROR_HAS(kvtrim::import_profile(src, 4, 4, 2), "layer \"3\" is missing");
  EXPECT_ERROR_HAS(kvtrim::import_profile(src, 3, 4, 3), "q_heads = 4 must be a positive multiple of kv_heads = 3");
}
