// The host tokenizer against Hugging Face `tokenizers` (goldens made by
// scripts/oracle/tokenizer_golden.py), built both from tokenizer.json and from the real GGUF.
#include "engine/gguf.hpp"
#include "engine/tokenizer.hpp"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <random>
#include <sstream>
#include <thread>

namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using kvhost::tokenizer;

const std::string data_dir = KVTRIM_SOURCE_DIR "/../shared/data";
const std::string golden_dir = KVTRIM_SOURCE_DIR "/tests/golden";

// Missing inputs are failures, not skips: say what is missing and how to get it.
std::string slurp(const std::string& path, const std::string& hint) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read " + path + " (" + hint + ")");
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

std::string model_path() {
  if (const char* env = std::getenv("KVTRIM_MODEL")) return env;
  const char* home = std::getenv("HOME");
  return std::string(home ? home : "") + "/.cache/kvtrim/SmolLM2-135M-Instruct.Q4_1.gguf";
}

json load_golden(const std::string& name) {
  return json::parse(slurp(golden_dir + "/" + name, "regenerate with scripts/oracle/tokenizer_golden.py"));
}

// The same vocabulary as the GGUF, read from the HF tokenizer.json (the oracle's own input).
tokenizer tokenizer_from_hf_json(std::string chat_template = {}) {
  const json j = json::parse(slurp(data_dir + "/smollm2/tokenizer.json", "shared/ must sit beside the repo"));
  const json& vocab = j.at("model").at("vocab");
  std::vector<std::string> tokens(vocab.size());
  std::vector<int> types(vocab.size(), kvhost::token_type_normal);
  for (const auto& [text, id] : vocab.items()) tokens.at(id.get<size_t>()) = text;
  for (const json& added : j.at("added_tokens"))
    types.at(added.at("id").get<size_t>()) =
        added.at("special").get<bool>() ? kvhost::token_type_control : kvhost::token_type_user_defined;
  std::vector<std::string> merges;
  for (const json& m : j.at("model").at("merges"))  // "a b" in older files, ["a", "b"] in newer
    merges.push_back(m.is_string() ? m.get<std::string>()
                                   : m.at(0).get<std::string>() + " " + m.at(1).get<std::string>());
  kvhost::tokenizer_options options;
  options.bos_id = 1;
  options.eos_id = 2;
  options.chat_template = std::move(chat_template);
  return tokenizer(std::move(tokens), std::move(types), merges, options);
}

const tokenizer& hf_tokenizer() {
  static const tokenizer t = tokenizer_from_hf_json();
  return t;
}

std::string fnv1a64(const std::vector<int>& ids) {
  uint64_t h = 0xCBF29CE484222325ull;
  for (int id : ids) {
    const auto u = static_cast<uint32_t>(id);
    for (int shift = 0; shift < 32; shift += 8) h = (h ^ ((u >> shift) & 0xFF)) * 0x100000001B3ull;
  }
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(h));
  return hex;
}

std::vector<std::string> essay_files() {
  const fs::path dir = data_dir + "/pg_essays";
  if (!fs::is_directory(dir)) throw std::runtime_error("essay folder " + dir.string() + " is missing");
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.path().extension() == ".txt" && e.path().filename() != "REPO_LICENSE.txt")
      names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

std::string essay(const std::string& name) {
  return slurp(data_dir + "/pg_essays/" + name, "shared/data/pg_essays");
}

std::vector<std::string> split_lines(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

// GPT-2's byte-level symbols of the 256 bytes, in byte order (ids 0..255 of a toy vocabulary).
std::vector<std::string> byte_symbols() {
  std::vector<std::string> out;
  int shifted = 256;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174;
    const int cp = printable ? b : shifted++;
    out.push_back(cp < 0x80 ? std::string(1, static_cast<char>(cp))
                            : std::string{static_cast<char>(0xC0 | (cp >> 6)), static_cast<char>(0x80 | (cp & 0x3F))});
  }
  return out;
}

const std::string smollm2_template =
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

TEST(Tokenizer, EdgeCasesMatchOracle) {
  const tokenizer& tok = hf_tokenizer();
  const json golden = load_golden("tokenizer_cases.json");
  ASSERT_GE(golden.at("cases").size(), 40u);
  for (const json& c : golden.at("cases")) {
    SCOPED_TRACE(c.at("name").get<std::string>());
    const std::string text = c.at("text");
    const std::vector<int> ids = tok.encode(text, c.at("parse_special").get<bool>());
    EXPECT_EQ(ids, c.at("ids").get<std::vector<int>>());
    EXPECT_EQ(tok.decode(ids), c.at("decoded").get<std::string>());
  }
}

TEST(Tokenizer, EssayLinesMatchOracleHashes) {
  const tokenizer& tok = hf_tokenizer();
  const json golden = load_golden("tokenizer_essays.json");
  std::map<std::string, std::vector<std::string>> lines;
  for (const auto& name : essay_files()) lines[name] = split_lines(essay(name));
  size_t compared = 0, mismatched = 0;
  for (const json& row : golden.at("lines")) {
    const std::string file = row.at(0);
    const size_t number = row.at(1);
    ASSERT_TRUE(lines.count(file)) << file << " is in the golden file but not in the essay folder";
    ASSERT_LE(number, lines[file].size()) << file << " has fewer lines than the golden file expects";
    const std::vector<int> ids = tok.encode(lines[file][number - 1], false);
    ++compared;
    if (ids.size() != row.at(2).get<size_t>() || fnv1a64(ids) != row.at(3).get<std::string>()) {
      ++mismatched;
      ADD_FAILURE() << file << ":" << number << " differs from the oracle (" << ids.size() << " tokens, expected "
                    << row.at(2) << ")";
    }
  }
  std::cout << "[ tokenizer ] essay lines compared: " << compared << ", mismatched: " << mismatched << "\n";
  EXPECT_GE(compared, 3000u);
}

// Whole files (paragraph breaks included) against the oracle, timed on a cold word cache.
TEST(Tokenizer, EssayFilesMatchOracleAndAreFast) {
  const tokenizer tok = tokenizer_from_hf_json();
  const json golden = load_golden("tokenizer_essays.json");
  const auto names = essay_files();
  ASSERT_EQ(golden.at("files").size(), names.size());
  std::vector<std::string> texts;
  for (const auto& name : names) texts.push_back(essay(name));
  size_t n_tokens = 0;
  std::vector<std::vector<int>> encoded;
  const auto t0 = std::chrono::steady_clock::now();
  for (const auto& text : texts) {
    encoded.push_back(tok.encode(text, false));
    n_tokens += encoded.back().size();
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  for (size_t i = 0; i < names.size(); ++i) {
    const json& want = golden.at("files").at(i);
    EXPECT_EQ(want.at("file").get<std::string>(), names[i]);
    EXPECT_EQ(encoded[i].size(), want.at("n").get<size_t>()) << names[i];
    EXPECT_EQ(fnv1a64(encoded[i]), want.at("fnv1a64").get<std::string>()) << names[i];
  }
  std::cout << "[ tokenizer ] " << n_tokens << " essay tokens in " << seconds << " s = " << n_tokens / seconds
            << " tokens/s\n";
  RecordProperty("tokens_per_second", static_cast<int>(n_tokens / seconds));
  EXPECT_GT(n_tokens, 100000u);
  EXPECT_LT(seconds, 10.0) << "encoding is far slower than expected (quadratic BPE?)";
}

TEST(Tokenizer, DecodeInvertsEncode) {
  const tokenizer& tok = hf_tokenizer();
  std::vector<std::string> texts;
  for (const auto& name : essay_files())
    for (const auto& line : split_lines(essay(name))) texts.push_back(line);
  // Random strings over ASCII, whitespace, multi-byte letters, digits, marks and special-token text.
  const std::vector<std::string> alphabet = {"a", "Z", " ", "  ", "\n", "\t", "\r\n", "'", "'s", "7", "42", ".",
                                             "é", "ß", "中", "😀", "\u0301", "\u00a0", "\u3000", "١", "<|im_end|>",
                                             "<|", "Ġ", "ĊĊ", "\x01", "\x7f", "'LL"};
  std::mt19937 rng(1234);
  for (int i = 0; i < 2000; ++i) {
    std::string s;
    const int len = static_cast<int>(rng() % 40);
    for (int k = 0; k < len; ++k) s += alphabet[rng() % alphabet.size()];
    texts.push_back(s);
  }
  size_t checked = 0;
  for (const auto& text : texts)
    for (bool parse_special : {false, true}) {
      ASSERT_EQ(tok.decode(tok.encode(text, parse_special)), text) << "parse_special=" << parse_special;
      ++checked;
    }
  EXPECT_GT(checked, 20000u);
}

TEST(Tokenizer, SpecialTokens) {
  const tokenizer& tok = hf_tokenizer();
  EXPECT_EQ(tok.n_vocab(), 49152);
  EXPECT_EQ(tok.bos(), 1);
  EXPECT_EQ(tok.eos(), 2);
  EXPECT_EQ(tok.id_of("<|im_start|>"), 1);
  EXPECT_EQ(tok.id_of("<|im_end|>"), 2);
  EXPECT_EQ(tok.token_text(2), "<|im_end|>");
  EXPECT_EQ(tok.token_text(tok.id_of("Ġthe")), "Ġthe");
  EXPECT_TRUE(tok.is_control(0));
  EXPECT_FALSE(tok.is_control(17));
  const std::vector<int> ids = tok.encode("<|im_start|>user\nhi<|im_end|>", true);
  EXPECT_EQ(ids.front(), 1);
  EXPECT_EQ(ids.back(), 2);
  EXPECT_EQ(tok.decode(ids, /*skip_special=*/true), "user\nhi");
  EXPECT_EQ(tok.decode(ids), "<|im_start|>user\nhi<|im_end|>");
  EXPECT_EQ(tok.decode({}), "");
}

TEST(Tokenizer, BadInputIsRejected) {
  const tokenizer& tok = hf_tokenizer();
  EXPECT_THROW(tok.encode("ok \xff bad", false), kvhost::tokenizer_error);
  EXPECT_THROW(tok.encode("\xc0\xaf", false), kvhost::tokenizer_error);     // overlong '/'
  EXPECT_THROW(tok.encode("\xed\xa0\x80", false), kvhost::tokenizer_error); // surrogate
  EXPECT_THROW(tok.encode("cut \xe4\xb8", false), kvhost::tokenizer_error);
  EXPECT_THROW(tok.decode({49152}), kvhost::tokenizer_error);
  EXPECT_THROW(tok.decode({-1}), kvhost::tokenizer_error);
  EXPECT_THROW(tok.token_text(-5), kvhost::tokenizer_error);
  EXPECT_THROW(tok.id_of("<|not_a_token|>"), kvhost::tokenizer_error);
  EXPECT_THROW(tok.apply_chat_template({{"user", "hi"}}, true), kvhost::tokenizer_error);  // no template given

  const std::vector<std::string> bytes = byte_symbols();
  const std::vector<int> normal(256, kvhost::token_type_normal);
  EXPECT_THROW(tokenizer({}, {}, {}, {}), kvhost::tokenizer_error);
  EXPECT_THROW(tokenizer(bytes, {1}, {}, {}), kvhost::tokenizer_error);  // type count differs
  EXPECT_THROW(tokenizer(bytes, normal, {"a"}, {}), kvhost::tokenizer_error);
  EXPECT_THROW(tokenizer(bytes, normal, {"a b"}, {}), kvhost::tokenizer_error);  // "ab" not in vocab
  kvhost::tokenizer_options bad_bos;
  bad_bos.bos_id = 256;
  EXPECT_THROW(tokenizer(bytes, normal, {}, bad_bos), kvhost::tokenizer_error);
}

// A toy vocabulary through the plain-data constructor: merges, both pre-tokenizers, and added
// tokens (user-defined ones are matched even without parse_special, control ones only with it).
TEST(Tokenizer, ToyVocabulary) {
  std::vector<std::string> tokens = byte_symbols();
  const std::vector<std::string> merges = {"\xc4\xa0 1", "1 2", "a b"};  // "Ġ 1", "1 2", "a b"
  for (const char* m : {"\xc4\xa0" "1", "12", "ab", "<ctl>", "<usr>"}) tokens.push_back(m);
  std::vector<int> types(tokens.size(), kvhost::token_type_normal);
  types[259] = kvhost::token_type_control;
  types[260] = kvhost::token_type_user_defined;
  kvhost::tokenizer_options options;
  options.pre = kvhost::pre_tokenizer::gpt2;
  const tokenizer gpt2(tokens, types, merges, options);
  options.pre = kvhost::pre_tokenizer::smollm;
  const tokenizer smollm(tokens, types, merges, options);
  const int space = ' ', one = '1', two = '2', x = 'x', lt = '<';
  EXPECT_EQ(gpt2.encode("ab 12", false), (std::vector<int>{258, 256, two}));     // " 12" is one word
  EXPECT_EQ(smollm.encode("ab 12", false), (std::vector<int>{258, space, one, two}));  // digits alone
  EXPECT_EQ(smollm.encode("12", false), (std::vector<int>{one, two}));
  EXPECT_EQ(gpt2.encode("12", false), (std::vector<int>{257}));
  const std::vector<int> plain = gpt2.encode("x<usr><ctl>", false);
  EXPECT_EQ(plain.size(), 7u);
  EXPECT_EQ(std::vector<int>(plain.begin(), plain.begin() + 3), (std::vector<int>{x, 260, lt}));
  EXPECT_EQ(gpt2.encode("x<usr><ctl>", true), (std::vector<int>{x, 260, 259}));
  EXPECT_EQ(gpt2.decode(gpt2.encode("x<usr><ctl>", true), /*skip_special=*/true), "x<usr>");
  EXPECT_EQ(gpt2.bos(), -1);
}

TEST(Tokenizer, ChatTemplateChatML) {
  const tokenizer tok = tokenizer_from_hf_json(smollm2_template);
  const std::string sys =
      "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n";
  EXPECT_EQ(tok.apply_chat_template({{"user", "Hi"}}, true),
            sys + "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
  EXPECT_EQ(tok.apply_chat_template({{"system", "Be brief."}, {"user", "Hi"}, {"assistant", "Hello"}}, false),
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
            "<|im_start|>assistant\nHello<|im_end|>\n");
  EXPECT_EQ(tok.apply_chat_template({}, true), "<|im_start|>assistant\n");
  const std::vector<int> ids = tok.encode(tok.apply_chat_template({{"user", "Hi"}}, true), true);
  EXPECT_EQ(std::count(ids.begin(), ids.end(), 1), 3);  // <|im_start|> three times
  EXPECT_EQ(std::count(ids.begin(), ids.end(), 2), 2);

  // ChatML without a default system message.
  std::string plain = smollm2_template;
  plain.erase(plain.find("{% if loop.first"), plain.find("{{'<|im_start|>'") - plain.find("{% if loop.first"));
  EXPECT_EQ(tokenizer_from_hf_json(plain).apply_chat_template({{"user", "Hi"}}, false),
            "<|im_start|>user\nHi<|im_end|>\n");
  EXPECT_THROW(tokenizer_from_hf_json("{{ bos_token }}{% for m in messages %}[INST]{% endfor %}")
                   .apply_chat_template({{"user", "Hi"}}, true),
               kvhost::tokenizer_error);
}

TEST(Tokenizer, GgufMatchesTokenizerJson) {
  const std::string path = model_path();
  ASSERT_TRUE(fs::exists(path)) << "model not found at " << path << ": run scripts/fetch_model.sh or set KVTRIM_MODEL";
  const kvhost::gguf_file file(path);
  const tokenizer gguf = tokenizer::from_gguf(file);
  const tokenizer& ref = hf_tokenizer();
  ASSERT_EQ(gguf.n_vocab(), ref.n_vocab());
  for (int id = 0; id < ref.n_vocab(); ++id) {
    ASSERT_EQ(gguf.token_text(id), ref.token_text(id)) << "id " << id;
    ASSERT_EQ(gguf.is_control(id), ref.is_control(id)) << "id " << id;
  }
  EXPECT_EQ(gguf.bos(), 1);
  EXPECT_EQ(gguf.eos(), 2);
  const json golden = load_golden("tokenizer_cases.json");
  for (const json& c : golden.at("cases")) {
    const bool parse_special = c.at("parse_special");
    EXPECT_EQ(gguf.encode(c.at("text").get<std::string>(), parse_special), c.at("ids").get<std::vector<int>>())
        << c.at("name");
  }
  for (const auto& name : essay_files()) {
    const std::string text = essay(name);
    EXPECT_EQ(gguf.encode(text, false), ref.encode(text, false)) << name;
  }
  EXPECT_EQ(gguf.apply_chat_template({{"user", "What is 2+2?"}}, true),
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
            "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n");
}

// A metadata-only GGUF v3 file with string values, for from_gguf's error paths.
std::string write_gguf(const std::vector<std::pair<std::string, std::string>>& kv) {
  const fs::path path = fs::temp_directory_path() / ("kvtrim_tokenizer_test_" + std::to_string(kv.size()) + "_" +
                                                     kv.back().second + ".gguf");
  std::ofstream out(path, std::ios::binary);
  const auto put = [&](const auto& v) { out.write(reinterpret_cast<const char*>(&v), sizeof v); };
  const auto put_string = [&](const std::string& s) {
    put(static_cast<uint64_t>(s.size()));
    out.write(s.data(), static_cast<std::streamsize>(s.size()));
  };
  out.write("GGUF", 4);
  put(uint32_t{3});
  put(uint64_t{0});
  put(static_cast<uint64_t>(kv.size()));
  for (const auto& [key, value] : kv) {
    put_string(key);
    put(uint32_t{8});  // string
    put_string(value);
  }
  return path.string();
}

TEST(Tokenizer, FromGgufRejectsOtherTokenizers) {
  const auto expect_error = [](const std::string& path, const std::string& needle) {
    const kvhost::gguf_file file(path);
    try {
      tokenizer::from_gguf(file);
      ADD_FAILURE() << "no error for " << path;
    } catch (const kvhost::tokenizer_error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
    fs::remove(path);
  };
  expect_error(write_gguf({{"tokenizer.ggml.model", "llama"}}), "unsupported tokenizer model 'llama'");
  expect_error(write_gguf({{"tokenizer.ggml.model", "gpt2"}, {"tokenizer.ggml.pre", "llama-bpe"}}),
               "unsupported pre-tokenizer 'llama-bpe'");
}

TEST(Tokenizer, ConcurrentEncodesAgree) {
  const tokenizer tok = tokenizer_from_hf_json();
  const std::string text = essay(essay_files().front());
  const std::vector<int> want = hf_tokenizer().encode(text, false);
  std::vector<std::vector<int>> got(2);
  std::vector<std::thread> threads;
  for (auto& g : got) threads.emplace_back([&] { g = tok.encode(text, false); });
  for (auto& t : threads) t.join();
  for (const auto& g : got) EXPECT_EQ(g, want);
}

}  // namespace
