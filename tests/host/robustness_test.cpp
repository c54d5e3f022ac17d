// Issue 15's regressions outside the GGUF reader and calibration: the tools' strict number
// parser, eval records (summarize on incomplete records, torn lines), the atomic write, output
// path checks, the eval JSONL reader's short prompts, and `full` on prompts shorter than the window.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <limits>
#include <string>
#include <vector>

#include "common/log_file.hpp"
#include "default_model.hpp"
#include "eval/eval_report.hpp"
#include "engine/compression.hpp"
#include "eval/eval_tasks.hpp"
#include "engine/runner.hpp"
#include "kvtrim/compose/method.hpp"
#include "tools/args.hpp"

namespace {

namespace fs = std::filesystem;

struct scratch {
  fs::path dir = fs::temp_directory_path() / ("kvtrim_robustness_" + std::to_string(::getpid()));
  scratch() { fs::create_directories(dir); }
  ~scratch() {
    std::error_code ec;
    fs::remove_all(dir, ec);
  }
  std::string write(const std::string& name, const std::string& text) const {
    const auto p = (dir / name).string();
    std::ofstream(p, std::ios::binary) << text;
    return p;
  }
  std::string read(const std::string& name) const {
    std::ifstream in(dir / name, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
  }
};

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

// ---- the one strict number parser of the tools -------------------------------------------------

TEST(StrictNumbers, IntegersWholeAndInRange) {
  using kvtools::parse_strict_integer;
  EXPECT_EQ(parse_strict_integer("42"), 42);
  EXPECT_EQ(parse_strict_integer("-7"), -7);
  EXPECT_EQ(parse_strict_integer("9223372036854775807"), std::numeric_limits<long long>::max());
  for (const char* bad : {"", " 1", "1 ", "1x", "0x10", "9223372036854775808", "-9223372036854775809",
                          "99999999999999999999", "1.0", "+", "-"})
    EXPECT_FALSE(parse_strict_integer(bad)) << "'" << bad << "'";
}

TEST(StrictNumbers, RealsWholeAndFinite) {
  using kvtools::parse_strict_number;
  EXPECT_EQ(parse_strict_number("0.5"), 0.5);
  EXPECT_EQ(parse_strict_number("1e-3"), 1e-3);
  EXPECT_EQ(parse_strict_number("-2"), -2.0);
  for (const char* bad : {"", "0.5x", " 0.5", "0.5 ", "inf", "-inf", "nan", "1e999", "x", "0,5"})
    EXPECT_FALSE(parse_strict_number(bad)) << "'" << bad << "'";
}

TEST(StrictNumbers, ArgsRejectNarrowingAndGarbage) {
  std::vector<std::string> v = {"kvtrim", "cmd", "--layers", "4294967326", "--ratio", "0.5x", "--n", "12"};
  std::vector<char*> argv;
  for (auto& s : v) argv.push_back(s.data());
  const kvtools::args a(static_cast<int>(argv.size()), argv.data(), 2, {"layers", "ratio", "n"}, {});
  EXPECT_THROW(a.int_in("layers", 0, 1, 1 << 20), kvtools::usage_error);
  EXPECT_EQ(a.integer("layers", 0), 4294967326LL);  // as a 64-bit value it is exact, not 30
  EXPECT_THROW(a.number("ratio", 0), kvtools::usage_error);
  EXPECT_EQ(a.int_in("n", 0, 1, 100), 12);
  EXPECT_THROW(a.int_in("n", 0, 13, 100), kvtools::usage_error);
  EXPECT_EQ(a.int_in("absent", 5, 10, 20), 5);  // the default is the tool's, not checked
}

// ---- eval records ------------------------------------------------------------------------------

TEST(EvalRecords, SummarizeRejectsIncompleteRecordsInsteadOfReadingPastThem) {
  // Was: const operator[] on a missing key (heap overread; under NDEBUG a dereferenced end()).
  for (const char* text : {R"({"task":"x"})", R"({"task":"x","method":"m","budget":"8","score":1})",
                           R"({"task":"x","method":"m","budget":"8","kv_percent_of_full":1})",
                           R"({"task":"fidelity","method":"m","budget":"8","kv_percent_of_full":1,"score":1})",
                           R"({"task":"x","method":5,"budget":"8","kv_percent_of_full":1,"score":1})", "[1,2]"}) {
    const std::vector<nlohmann::json> recs = {nlohmann::json::parse(text)};
    const std::string e = error_of([&] { kvhost::summarize(recs); });
    EXPECT_NE(e.find("summarize: record 1:"), std::string::npos) << text << " -> " << e;
    EXPECT_THROW(kvhost::comparison_markdown(recs), std::runtime_error) << text;
  }
  const std::vector<nlohmann::json> ok = {nlohmann::json::parse(
      R"({"task":"fidelity","method":"full","budget":"full","kv_percent_of_full":100,"score":100,"kl":0,"ppl":null})")};
  ASSERT_EQ(kvhost::summarize(ok).size(), 3u);  // a non-finite ppl (written as null) is not an error
}

TEST(EvalRecords, TasksNamedLikeFidelityTablesDoNotReadMissingKeys) {
  // Fuzz finding (eval_records, 2026-12-02): a task called "fidelity_ppl" counts in the table of
  // that name, whose value is the record's "ppl" -- absent here: const operator[] asserted.
  const std::vector<nlohmann::json> recs = {
      nlohmann::json::parse(R"({"task":"fidelity_ppl","id":"a","method":"snapkv","budget":"64","kv_percent_of_full":6.25,"score":100})"),
      nlohmann::json::parse(R"({"task":"fidelity_ppl","id":"a","method":"compresskv","budget":"64","kv_percent_of_full":6.25,"score":90})")};
  EXPECT_NO_THROW((void)kvhost::comparison_markdown(recs));
}

TEST(EvalRecords, ReaderNamesFileAndLineAndSkipsTornLines) {
  const scratch s;
  const std::string good = R"({"task":"x","method":"full","budget":"full","kv_percent_of_full":100,"score":50})";
  const auto p = s.write("samples.jsonl", good + "\n{\"task\":\"x\"}\n");
  const std::string e = error_of([&] { kvhost::read_records(p); });
  EXPECT_NE(e.find("samples.jsonl:2: record lacks \"method\""), std::string::npos) << e;
  // A torn line (an interrupted append), last or in the middle where an older kvtrim appended
  // after it, is skipped.
  const auto torn = s.write("torn.jsonl", good + "\n{\"task\":\"x\",\"met\n" + good + "\n{\"ta");
  EXPECT_EQ(kvhost::read_records(torn).size(), 2u);
}

TEST(EvalRecords, TornTailIsCutBeforeTheNextAppend) {
  const scratch s;
  const auto p = s.write("log.jsonl", "{\"a\":1}\n{\"b\":2}\n{\"c\"");
  kvhost::truncate_torn_tail(p);
  EXPECT_EQ(s.read("log.jsonl"), "{\"a\":1}\n{\"b\":2}\n");
  kvhost::truncate_torn_tail(p);  // complete: unchanged
  EXPECT_EQ(s.read("log.jsonl"), "{\"a\":1}\n{\"b\":2}\n");
  const auto one = s.write("one.jsonl", std::string(10000, 'x'));  // one torn line longer than a read block
  kvhost::truncate_torn_tail(one);
  EXPECT_EQ(s.read("one.jsonl"), "");
  EXPECT_NO_THROW(kvhost::truncate_torn_tail((s.dir / "absent").string()));
}

// ---- atomic writes and output paths -----------------------------------------------------------

TEST(AtomicWrite, UniqueTempNameNothingLeftBehind) {
  const scratch s;
  const auto p = (s.dir / "summary.md").string();
  std::ofstream(p + ".tmp") << "someone else's file";  // the old fixed temp name: left alone
  kvhost::write_file_atomic(p, "hello\n");
  EXPECT_EQ(s.read("summary.md"), "hello\n");
  EXPECT_EQ(s.read("summary.md.tmp"), "someone else's file");
  int files = 0;
  for (const auto& e : fs::directory_iterator(s.dir)) files += e.is_regular_file();
  EXPECT_EQ(files, 2);
  const std::string e = error_of([&] { kvhost::write_file_atomic((s.dir / "no/such/dir/x").string(), "x"); });
  EXPECT_NE(e.find("no/such/dir/x"), std::string::npos) << e;
}

TEST(OutputPaths, CheckedBeforeLongWork) {
  const scratch s;
  EXPECT_NO_THROW(kvhost::check_writable_file((s.dir / "p.json").string(), "--out"));
  EXPECT_NE(error_of([&] { kvhost::check_writable_file((s.dir / "missing/p.json").string(), "--out"); })
                .find("does not exist"),
            std::string::npos);
  EXPECT_NE(error_of([&] { kvhost::check_writable_file(s.dir.string(), "--out"); }).find("is a directory"),
            std::string::npos);
  const auto file = s.write("f", "x");
  EXPECT_NE(error_of([&] { kvhost::check_writable_dir(file + "/sub", "--resume-dir", true); })
                .find("--resume-dir: cannot create"),
            std::string::npos);
  EXPECT_NO_THROW(kvhost::check_writable_dir((s.dir / "new/deep").string(), "--resume-dir", true));
  int left = 0;  // the probe files are removed
  for (const auto& e : fs::recursive_directory_iterator(s.dir)) left += e.path().filename().string()[0] == '.';
  EXPECT_EQ(left, 0);
}

// ---- the eval JSONL reader and `full` on short prompts (the real tokenizer / model) ------------

TEST(EvalJsonl, EmptyOrShortInputsNameFileAndLine) {
  const auto& m = kvtest::load_default_model();
  ASSERT_TRUE(m.tok) << kvtest::kMissingModel;
  const scratch s;
  const auto empty = s.write("e.jsonl", "{\"input\": \"a b c d e f g h i j k\", \"outputs\": [\"x\"]}\n"
                                        "{\"input\": \"\", \"outputs\": [\"x\"]}\n");
  std::string e = error_of([&] { kvhost::jsonl_samples(*m.tok, empty, 256, 8, "jsonl", 1); });
  EXPECT_NE(e.find("e.jsonl:2: 'input' is empty"), std::string::npos) << e;
  const auto shortp = s.write("s.jsonl", "{\"input\": \"Hi\", \"outputs\": [\"x\"]}\n");
  e = error_of([&] { kvhost::jsonl_samples(*m.tok, shortp, 256, 8, "jsonl", 8); });
  EXPECT_NE(e.find("s.jsonl:1: the prompt has 1 tokens, fewer than the window of 8"), std::string::npos) << e;
  EXPECT_EQ(kvhost::jsonl_samples(*m.tok, shortp, 256, 8, "jsonl", 1).size(), 1u);
}

TEST(FullMethod, KeepsPromptsShorterThanTheWindow) {
  const auto& m = kvtest::load_default_model();
  ASSERT_TRUE(m.mdl) << kvtest::kMissingModel;
  kvtrim::method_spec c;
  c.name = "full";
  c.window = 8;
  const kvtrim::method full = kvtrim::make_method(c, kvhost::kvtrim_shape(m.mdl->config()));
  const std::vector<int32_t> prompt = {1, 2, 3};  // shorter than the window
  const kvhost::run_report r = kvhost::run_generation(*m.mdl, *m.tok, prompt, &full, 2, m.stops);
  EXPECT_EQ(r.prompt_tokens, 3);
  EXPECT_DOUBLE_EQ(r.kv_percent_of_full, 100.0);
  c.name = "snapkv";  // a method that scores the window still needs it
  const kvtrim::method snap = kvtrim::make_method(c, kvhost::kvtrim_shape(m.mdl->config()));
  EXPECT_THROW(kvhost::run_generation(*m.mdl, *m.tok, prompt, &snap, 2, m.stops), std::exception);
}

}  // namespace

// Found on the 2026-12-07 eval grid: a 24-token answer ended inside a multi-byte character, the
// record's JSON dump threw "invalid UTF-8 byte" and the whole shard stopped. The cut bytes are now
// written as U+FFFD and the record parses.
TEST(RunReport, AnAnswerCutInsideACharacterStillWritesValidJson) {
  kvhost::run_report r;
  r.method = "snapkv";
  r.answer = "caf\xC3";  // the first byte of "é" alone
  const auto j = nlohmann::json::parse(kvhost::to_json(r));
  EXPECT_EQ(j["answer"].get<std::string>(), "caf\xEF\xBF\xBD");
  EXPECT_EQ(j["method"].get<std::string>(), "snapkv");
}
